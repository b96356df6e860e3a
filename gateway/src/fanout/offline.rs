//! Offline messages: on a user's connect, the high-priority pushes that reached no gateway while
//! the user was away (stored by the distributor in the `DANMU_OFFLINE` stream) are read, removed
//! and handed to the new connection, oldest first.

use anyhow::Context as _;
use async_nats::jetstream::stream::LastRawMessageErrorKind;
use async_nats::jetstream::{self, consumer};
use bytes::Bytes;
use danmu_proto::subjects;
use danmu_proto::{batch, frame};
use futures::StreamExt;

use crate::connection::Framing;

/// Reads and removes the user's waiting pushes (at most `max`). An absent stream means none.
pub async fn take(js: &jetstream::Context, uid: u64, max: usize) -> anyhow::Result<Vec<Bytes>> {
    // No STREAM.INFO round trip per connect: the name is all the calls below need.
    let stream = js
        .get_stream_no_info(subjects::OFFLINE_STREAM)
        .await
        .context("offline stream name")?;
    let subject = subjects::offline(uid);
    // Most users have nothing waiting: one message lookup answers that, where creating a
    // consumer for every connect would load JetStream's API during a reconnect storm.
    match stream.get_last_raw_message_by_subject(&subject).await {
        Ok(_) => {}
        Err(error) => match error.kind() {
            LastRawMessageErrorKind::NoMessageFound => return Ok(Vec::new()),
            LastRawMessageErrorKind::JetStream(e)
                if e.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND =>
            {
                return Ok(Vec::new());
            }
            _ => return Err(anyhow::anyhow!("looking for offline pushes: {error}")),
        },
    }
    let consumer = stream
        .create_consumer(consumer::pull::Config {
            filter_subject: subject.clone(),
            ack_policy: consumer::AckPolicy::None,
            deliver_policy: consumer::DeliverPolicy::All,
            inactive_threshold: std::time::Duration::from_secs(30),
            ..Default::default()
        })
        .await
        .context("reading offline pushes")?;
    let mut batch = consumer
        .fetch()
        .max_messages(max)
        .messages()
        .await
        .context("reading offline pushes")?;
    let mut payloads = Vec::new();
    let mut last = 0;
    while let Some(message) = batch.next().await {
        let message = message.map_err(|e| anyhow::anyhow!("reading offline pushes: {e}"))?;
        if let Ok(info) = message.info() {
            last = info.stream_sequence;
        }
        payloads.push(message.payload.clone());
    }
    if last > 0 {
        // Only what was read: a push stored meanwhile stays for the next connect.
        stream
            .purge()
            .filter(subject)
            .sequence(last + 1)
            .await
            .context("removing delivered offline pushes")?;
    }
    Ok(payloads)
}

/// One batch of `payloads` in the encoding a connection asked for.
pub fn encode(payloads: &[Bytes], protover: u16, framing: Framing, brotli_quality: u32) -> Bytes {
    let raw = batch::encode_messages(payloads.iter().map(|p| p.as_ref()));
    let packets = match protover {
        frame::version::BROTLI => batch::compressed_packet(
            frame::version::BROTLI,
            &batch::brotli_compress(&raw, brotli_quality),
        ),
        frame::version::ZLIB => batch::compressed_packet(
            frame::version::ZLIB,
            &batch::zlib_compress(&raw, batch::DEFAULT_ZLIB_LEVEL),
        ),
        _ => Bytes::from(raw),
    };
    match framing {
        Framing::Stream => packets,
        Framing::Message => framing.wrap(&packets),
    }
}

/// Offline reads in flight at once per gateway: the number of reader tasks.
const READERS: usize = 32;

/// Attempts at reading a user's offline pushes before giving up (counted as `failed`).
const ATTEMPTS: u32 = 8;
/// Wait before the second attempt; doubled for each next one (50 ms .. 6.4 s, ~12.7 s in all).
const FIRST_RETRY: std::time::Duration = std::time::Duration::from_millis(50);

/// One connect's read: whose pushes, and the connection that gets them.
struct Job {
    uid: u64,
    member: std::sync::Arc<crate::fanout::groups::Member>,
}

/// Reads users' offline pushes on connect with a fixed pool of [`READERS`] tasks fed by a
/// queue, and queues what it finds for the connection as high priority.
///
/// A queue entry is 16 bytes; a task per connect was a ~4 KiB future each, and a reconnect
/// storm of 10,000 users left 40 MB of them waiting for their turn at JetStream (and, freed,
/// fragments that kept the gateway's RSS up long after: idle memory per connection). The pool
/// also bounds the load on JetStream's API during such a storm.
///
/// A failed read (JetStream answers 503 while a consumer is placed in another region's stream,
/// say) is retried with backoff by the same reader and counted
/// (`danmu_gateway_offline_reads_total{outcome="retried"}`), so a push is not left behind until
/// the user's next connect; the pushes stay stored until a read succeeds.
#[derive(Clone)]
pub struct OfflineReader {
    jobs: tokio::sync::mpsc::UnboundedSender<Job>,
}

impl OfflineReader {
    /// Starts the readers; they stop when every `OfflineReader` clone is dropped.
    pub fn start(
        js: jetstream::Context,
        max: usize,
        brotli_quality: u32,
        stats: std::sync::Arc<crate::stats::Stats>,
    ) -> OfflineReader {
        let (jobs, queue) = tokio::sync::mpsc::unbounded_channel::<Job>();
        let queue = std::sync::Arc::new(tokio::sync::Mutex::new(queue));
        for _ in 0..READERS {
            let (js, queue, stats) = (js.clone(), queue.clone(), stats.clone());
            tokio::spawn(async move {
                loop {
                    // The lock is held only while waiting for the next job, not while reading.
                    let Some(job) = queue.lock().await.recv().await else {
                        return;
                    };
                    read(&js, job, max, brotli_quality, &stats).await;
                }
            });
        }
        OfflineReader { jobs }
    }

    /// Queues the read of `uid`'s waiting pushes for `member`.
    pub fn deliver_on_connect(
        &self,
        uid: u64,
        member: std::sync::Arc<crate::fanout::groups::Member>,
    ) {
        let _ = self.jobs.send(Job { uid, member });
    }
}

async fn read(
    js: &jetstream::Context,
    Job { uid, member }: Job,
    max: usize,
    brotli_quality: u32,
    stats: &crate::stats::Stats,
) {
    let mut wait = FIRST_RETRY;
    for attempt in 1..=ATTEMPTS {
        if member.outbound.is_closed() {
            return; // gone meanwhile: the pushes stay for the next connect
        }
        match take(js, uid, max).await {
            Ok(payloads) => {
                stats.offline_read("ok");
                if !payloads.is_empty() {
                    let encoded =
                        encode(&payloads, member.protover, member.framing, brotli_quality);
                    member.outbound.push(encoded, true, payloads.len() as u32);
                }
                return;
            }
            Err(error) if attempt < ATTEMPTS => {
                stats.offline_read("retried");
                tracing::debug!(%error, uid, attempt, "offline pushes; retrying");
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
            Err(error) => {
                stats.offline_read("failed");
                tracing::warn!(%error, uid, "offline pushes: giving up until the next connect");
            }
        }
    }
}
