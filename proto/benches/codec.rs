//! Hot paths of the wire protocol: GOIM framing, batch compression (once per batch on the
//! distributor), and WebSocket framing (once per batch on the gateway) and unmasking.
//!
//! `cargo bench -p danmu-proto --bench codec`

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use danmu_proto::batch::{
    DEFAULT_BROTLI_QUALITY, DEFAULT_ZLIB_LEVEL, brotli_compress, brotli_decompress,
    encode_messages, zlib_compress, zlib_decompress,
};
use danmu_proto::frame::{self, DEFAULT_MAX_PACKET_LEN, Frame, op, version};
use danmu_proto::websocket::{self, Decoder, Role};

/// Danmu-shaped JSON: the `cmd`/`info` layout Bilibili clients parse, with varying users and
/// texts so the compressor sees realistic repetition, not identical copies.
fn danmu_batch(n: usize) -> Vec<Vec<u8>> {
    const TEXTS: [&str; 8] = [
        "哈哈哈哈哈",
        "666666",
        "up主太强了",
        "前方高能",
        "awsl",
        "这操作可以",
        "妙啊",
        "打卡",
    ];
    (0..n)
        .map(|i| {
            let uid = 10_000_000 + i as u64 * 7919;
            format!(
                r#"{{"cmd":"DANMU_MSG","info":[[0,1,25,16777215,{ts},{rnd},0,"{hash:08x}",0,0,0,"",0,"{{}}","{{}}"],"{text}",[{uid},"viewer_{uid}",0,0,0,10000,1,""],[{lvl},"粉丝牌","主播",{room},6067854,"",0],[{ul},0,6406234,"\u003e50000"],["",""],0,0,null,{{"ts":{secs},"ct":"{ct:X}"}},0,0,null,null,0,105]}}"#,
                ts = 1_700_000_000_000u64 + i as u64 * 37,
                rnd = 1_234_567 + i * 31,
                hash = uid.wrapping_mul(2_654_435_761),
                text = TEXTS[i % TEXTS.len()],
                lvl = 1 + i % 20,
                room = 21_452_505,
                ul = 3 + i % 40,
                secs = 1_700_000_000 + i,
                ct = uid.wrapping_mul(40_503),
            )
            .into_bytes()
        })
        .collect()
}

fn framing(c: &mut Criterion) {
    let body = vec![b'x'; 100];
    let frame = Frame::new(version::RAW, op::MESSAGE, 0, body.clone());
    let mut g = c.benchmark_group("frame");
    g.throughput(Throughput::Elements(1));
    g.bench_function("encode_100B", |b| {
        let mut dst = BytesMut::with_capacity(4096);
        b.iter(|| {
            dst.clear();
            black_box(&frame).encode(&mut dst);
            black_box(dst.len())
        })
    });
    let mut stream = BytesMut::new();
    for _ in 0..20 {
        frame.encode(&mut stream);
    }
    let stream = stream.freeze();
    g.throughput(Throughput::Elements(20));
    g.bench_function("decode_20x100B", |b| {
        b.iter(|| {
            let mut buf = BytesMut::from(&stream[..]);
            let mut n = 0;
            while let Ok(Some(f)) = frame::decode(&mut buf, DEFAULT_MAX_PACKET_LEN) {
                n += f.body.len();
            }
            black_box(n)
        })
    });
    g.finish();
}

fn compression(c: &mut Criterion) {
    let messages = danmu_batch(20);
    let run = encode_messages(messages.iter().map(Vec::as_slice));
    let br = brotli_compress(&run, DEFAULT_BROTLI_QUALITY);
    let z = zlib_compress(&run, DEFAULT_ZLIB_LEVEL);
    eprintln!(
        "20-message batch: raw {} B, zlib-{DEFAULT_ZLIB_LEVEL} {} B, brotli-{DEFAULT_BROTLI_QUALITY} {} B, brotli-11 {} B",
        run.len(),
        z.len(),
        br.len(),
        brotli_compress(&run, 11).len()
    );
    let mut g = c.benchmark_group("batch20");
    g.throughput(Throughput::Bytes(run.len() as u64));
    for q in [1, DEFAULT_BROTLI_QUALITY, 9, 11] {
        g.bench_function(format!("brotli_q{q}"), |b| {
            b.iter(|| brotli_compress(black_box(&run), q))
        });
    }
    for level in [1, DEFAULT_ZLIB_LEVEL, 9] {
        g.bench_function(format!("zlib_l{level}"), |b| {
            b.iter(|| zlib_compress(black_box(&run), level))
        });
    }
    g.bench_function("brotli_decompress", |b| {
        b.iter(|| brotli_decompress(black_box(&br), 1 << 20))
    });
    g.bench_function("zlib_decompress", |b| {
        b.iter(|| zlib_decompress(black_box(&z), 1 << 20))
    });
    g.finish();
}

fn websocket_framing(c: &mut Criterion) {
    let messages = danmu_batch(20);
    let run = encode_messages(messages.iter().map(Vec::as_slice));
    let packet = danmu_proto::batch::compressed_packet(
        version::BROTLI,
        &brotli_compress(&run, DEFAULT_BROTLI_QUALITY),
    );
    let mut g = c.benchmark_group("websocket");
    g.throughput(Throughput::Bytes(packet.len() as u64));
    g.bench_function("server_binary_batch", |b| {
        b.iter(|| websocket::server_binary(black_box(&packet)))
    });
    let mut data = vec![0u8; 4096];
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("apply_mask_4KiB", |b| {
        b.iter(|| websocket::apply_mask(black_box(&mut data), [1, 2, 3, 4]))
    });
    let heartbeat = websocket::client_frame(
        websocket::opcode::BINARY,
        &Frame::new(version::CONTROL, op::HEARTBEAT, 1, &b"{}"[..]).to_bytes(),
        [9, 8, 7, 6],
    );
    g.throughput(Throughput::Elements(1));
    g.bench_function("decode_client_heartbeat", |b| {
        let mut decoder = Decoder::new(Role::Server, 64 * 1024);
        b.iter(|| {
            let mut buf = BytesMut::from(&heartbeat[..]);
            black_box(decoder.decode(&mut buf))
        })
    });
    g.finish();
}

criterion_group!(benches, framing, compression, websocket_framing);
criterion_main!(benches);
