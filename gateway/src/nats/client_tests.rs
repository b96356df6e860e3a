//! Byte scripts: the client driven with server bytes and an explicit clock.

use super::*;

const INFO: &[u8] = b"INFO {\"server_id\":\"S\",\"max_payload\":1048576,\"nonce\":\"n0nce\"}\r\n";

fn server(port: u16) -> ServerAddr {
    ServerAddr {
        host: "127.0.0.1".into(),
        port,
        tls: false,
        user: None,
        pass: None,
        token: None,
    }
}

fn client(servers: Vec<ServerAddr>, now: Instant) -> Client<&'static str> {
    Client::new(Options::new("test"), servers, 7, now)
}

fn events<T: Subscription>(client: &mut Client<T>) -> Vec<Event> {
    std::iter::from_fn(|| client.poll_event()).collect()
}

fn sent<T: Subscription>(client: &mut Client<T>) -> String {
    client
        .poll_transmit()
        .map(|b| String::from_utf8(b.to_vec()).unwrap())
        .unwrap_or_default()
}

/// Runs an attempt through to the server's PONG; returns the server chosen and what was sent.
fn connect<T: Subscription>(
    client: &mut Client<T>,
    now: Instant,
    info: &[u8],
) -> (ServerAddr, String) {
    assert_eq!(client.poll_timeout(), now, "the attempt is due now");
    client.handle_timeout(now);
    let server = match events(client).as_slice() {
        [Event::Connect(server)] => server.clone(),
        other => panic!("expected Connect, got {other:?}"),
    };
    client.handle_open(now);
    client.handle_read(info, now);
    let hello = sent(client);
    assert!(
        hello.starts_with("CONNECT {") && hello.ends_with("}\r\nPING\r\n"),
        "{hello}"
    );
    client.handle_read(b"PONG\r\n", now);
    assert!(client.is_connected());
    let connected = events(client);
    assert!(
        matches!(connected.as_slice(), [Event::Connected { .. }]),
        "{connected:?}"
    );
    (server, hello + &sent(client))
}

fn connect_json(hello: &str) -> serde_json::Value {
    let line = hello.lines().next().unwrap();
    serde_json::from_str(line.strip_prefix("CONNECT ").unwrap()).unwrap()
}

#[test]
fn a_permissions_error_is_an_event_and_the_link_keeps_delivering() {
    let now = Instant::now();
    let mut c = client(vec![server(1)], now);
    c.subscribe(1, "danmu.edge.lo.room.1");
    c.subscribe(2, "danmu.edge.lo.room.2");
    connect(&mut c, now, INFO);
    c.handle_read(
        b"-ERR 'Permissions Violation for Subscription to \"danmu.edge.lo.room.2\"'\r\n\
          MSG danmu.edge.lo.room.1 1 2\r\nhi\r\n",
        now,
    );
    assert_eq!(
        events(&mut c),
        [
            Event::ServerError {
                kind: ErrorKind::Permissions,
                message: "Permissions Violation for Subscription to \"danmu.edge.lo.room.2\""
                    .into()
            },
            Event::Message {
                sid: 1,
                reply: None,
                payload: Bytes::from_static(b"hi")
            },
        ]
    );
    assert!(c.is_connected());
    assert_eq!(
        c.poll_timeout(),
        now + Duration::from_secs(20),
        "only the PING is due"
    );
}

#[test]
fn errors_the_server_closes_after_end_the_link_by_kind() {
    for (text, kind) in [
        ("Authorization Violation", ErrorKind::Auth),
        ("Stale Connection", ErrorKind::StaleConnection),
        ("Slow Consumer", ErrorKind::SlowConsumer),
        ("Maximum Payload Violation", ErrorKind::MaxPayload),
        ("Unknown Protocol Operation", ErrorKind::Other),
    ] {
        let now = Instant::now();
        let mut c = client(vec![server(1)], now);
        connect(&mut c, now, INFO);
        c.handle_read(format!("-ERR '{text}'\r\n").as_bytes(), now);
        assert_eq!(
            events(&mut c),
            [Event::Close(Disconnect::ServerError {
                kind,
                message: text.into()
            })]
        );
        assert!(!c.is_connected());
    }
}

#[test]
fn an_authorization_error_before_the_pong_is_a_failed_attempt() {
    let now = Instant::now();
    let mut c = client(vec![server(1)], now);
    c.handle_timeout(now);
    events(&mut c);
    c.handle_open(now);
    c.handle_read(INFO, now);
    sent(&mut c);
    c.handle_read(b"-ERR 'Authorization Violation'\r\n", now);
    assert!(matches!(
        events(&mut c).as_slice(),
        [Event::Close(Disconnect::ServerError {
            kind: ErrorKind::Auth,
            ..
        })]
    ));
    // Never connected: the next attempt waits (the first was the one at once).
    assert!(c.poll_timeout() > now);
}

#[test]
fn lame_duck_mode_moves_the_link_to_another_server_at_once() {
    let now = Instant::now();
    let mut c = client(vec![server(1), server(2)], now);
    let (first, _) = connect(&mut c, now, INFO);
    let later = now + Duration::from_secs(1);
    c.handle_read(b"INFO {\"server_id\":\"S\",\"ldm\":true}\r\n", later);
    assert_eq!(events(&mut c), [Event::Close(Disconnect::LameDuck)]);
    assert_eq!(c.poll_timeout(), later, "the move is at once");
    let (second, _) = connect(&mut c, later, INFO);
    assert_ne!(first, second);
}

#[test]
fn lame_duck_mode_with_no_other_server_keeps_the_link() {
    let now = Instant::now();
    let mut c = client(vec![server(1)], now);
    connect(&mut c, now, INFO);
    c.handle_read(b"INFO {\"ldm\":true}\r\n", now);
    assert_eq!(events(&mut c), []);
    assert!(c.is_connected());
}

#[test]
fn discovered_servers_join_the_pool_and_max_payload_is_the_servers() {
    let now = Instant::now();
    let mut c = client(vec![server(1)], now);
    connect(
        &mut c,
        now,
        b"INFO {\"max_payload\":4,\"connect_urls\":[\"127.0.0.1:1\",\"10.0.0.2:4222\",\"[::1]:4223\"]}\r\n",
    );
    let pool: Vec<_> = c.servers().iter().map(ServerAddr::addr).collect();
    assert_eq!(pool, ["127.0.0.1:1", "10.0.0.2:4222", "::1:4223"]);
    assert_eq!(c.max_payload(), 4);
    c.handle_read(b"MSG s 1 4\r\nfour\r\n", now);
    assert!(matches!(events(&mut c).as_slice(), [Event::Message { .. }]));
    c.handle_read(b"MSG s 1 5\r\nfive!\r\n", now);
    assert!(matches!(
        events(&mut c).as_slice(),
        [Event::Close(Disconnect::Protocol(WireError::TooLarge {
            size: 5,
            max: 4
        }))]
    ));
}

#[test]
fn a_missing_pong_reconnects() {
    let now = Instant::now();
    let mut c = client(vec![server(1)], now);
    connect(&mut c, now, INFO);
    let interval = Duration::from_secs(20);
    let mut t = now;
    for _ in 0..2 {
        t += interval;
        assert_eq!(c.poll_timeout(), t);
        c.handle_timeout(t);
        assert_eq!(sent(&mut c), "PING\r\n");
    }
    // A PONG resets the count...
    c.handle_read(b"PONG\r\n", t);
    t += interval;
    c.handle_timeout(t);
    t += interval;
    c.handle_timeout(t);
    assert_eq!(events(&mut c), []);
    assert!(c.is_connected());
    // ...two unanswered and the link is stale.
    t += interval;
    c.handle_timeout(t);
    assert_eq!(events(&mut c), [Event::Close(Disconnect::Stale(2))]);
    assert_eq!(c.poll_timeout(), t, "first reconnect at once");
    c.handle_timeout(t);
    assert!(matches!(events(&mut c).as_slice(), [Event::Connect(_)]));
}

#[test]
fn the_server_pinging_gets_a_pong() {
    let now = Instant::now();
    let mut c = client(vec![server(1)], now);
    connect(&mut c, now, INFO);
    c.handle_read(b"PING\r\n", now);
    assert_eq!(sent(&mut c), "PONG\r\n");
}

#[test]
fn every_live_subscription_is_sent_exactly_once_after_each_connect() {
    fn subs(text: &str) -> Vec<&str> {
        let mut lines: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("SUB") || l.starts_with("UNSUB"))
            .collect();
        lines.sort_unstable();
        lines
    }
    let now = Instant::now();
    let mut c = client(vec![server(1)], now);
    c.subscribe(1, "a");
    c.subscribe(2, "b");
    assert_eq!(
        sent(&mut c),
        "",
        "nothing goes out before the server took us"
    );
    c.subscribe(3, "c");
    c.unsubscribe(2);
    let (_, hello) = connect(&mut c, now, INFO);
    assert_eq!(subs(&hello), ["SUB a 1", "SUB c 3"]);
    c.subscribe(4, "d");
    c.unsubscribe(1);
    assert_eq!(subs(&sent(&mut c)), ["SUB d 4", "UNSUB 1"]);

    c.handle_closed(now, "EOF".into());
    c.subscribe(5, "e");
    c.unsubscribe(3);
    assert_eq!(sent(&mut c), "");
    let (_, hello) = connect(&mut c, now, INFO);
    assert_eq!(subs(&hello), ["SUB d 4", "SUB e 5"]);
    assert_eq!(c.subscription(4), Some(&"d"));
    assert_eq!(c.subscription(3), None);
}

#[test]
fn reconnects_back_off_with_jitter_and_reset_after_a_connection() {
    let mut now = Instant::now();
    let mut c = client(vec![server(1)], now);
    let mut delays = Vec::new();
    for _ in 0..8 {
        let due = c.poll_timeout();
        delays.push(due - now);
        now = due;
        c.handle_timeout(now);
        events(&mut c);
        c.handle_closed(now, "connection refused".into());
    }
    assert_eq!(delays[0], Duration::ZERO, "first attempt at once");
    for (n, delay) in delays.iter().enumerate().skip(1) {
        let step = (Duration::from_millis(50) * (1 << (n - 1))).min(Duration::from_secs(2));
        assert!(
            *delay >= step / 2 && *delay <= step,
            "attempt {n}: {delay:?} not within [{:?}, {step:?}]",
            step / 2
        );
    }
    assert!(
        delays[7] >= Duration::from_secs(1),
        "capped, not reset: {delays:?}"
    );
    now = c.poll_timeout();
    // A connection the server takes resets the backoff: after it, the first retry is at once.
    c.handle_timeout(now);
    events(&mut c);
    c.handle_open(now);
    c.handle_read(INFO, now);
    c.handle_read(b"PONG\r\n", now);
    assert!(c.is_connected());
    c.handle_closed(now, "EOF".into());
    assert_eq!(c.poll_timeout(), now);
}

#[test]
fn the_server_list_is_shuffled_and_then_tried_in_turn() {
    let now = Instant::now();
    let servers: Vec<_> = (1..=8).map(server).collect();
    let mut orders = std::collections::HashSet::new();
    for seed in 0..4 {
        let mut c = Client::<&'static str>::new(Options::new("t"), servers.clone(), seed, now);
        let mut order = Vec::new();
        for _ in 0..8 {
            let at = c.poll_timeout();
            c.handle_timeout(at);
            match events(&mut c).as_slice() {
                [Event::Connect(s)] => order.push(s.port),
                other => panic!("{other:?}"),
            }
            c.handle_closed(at, "refused".into());
        }
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(
            sorted,
            (1..=8).collect::<Vec<_>>(),
            "each server once per round"
        );
        orders.insert(order);
    }
    assert!(orders.len() > 1, "seeds shuffle differently");
}

#[test]
fn a_handshake_that_stalls_is_given_up() {
    let now = Instant::now();
    let mut c = client(vec![server(1)], now);
    c.handle_timeout(now);
    events(&mut c);
    c.handle_open(now);
    let deadline = c.poll_timeout();
    assert_eq!(deadline, now + Duration::from_secs(5));
    c.handle_timeout(deadline);
    assert_eq!(
        events(&mut c),
        [Event::Close(Disconnect::HandshakeTimeout(
            Duration::from_secs(5)
        ))]
    );
}

#[test]
fn tls_starts_after_info_when_the_server_requires_it_and_before_connect() {
    let now = Instant::now();
    let mut c = client(vec![server(1)], now);
    c.handle_timeout(now);
    events(&mut c);
    c.handle_open(now);
    c.handle_read(b"INFO {\"tls_required\":true}\r\n", now);
    assert_eq!(
        events(&mut c),
        [Event::StartTls {
            host: "127.0.0.1".into()
        }]
    );
    assert_eq!(sent(&mut c), "", "no CONNECT in clear text");
    c.handle_tls(now);
    let hello = sent(&mut c);
    assert_eq!(connect_json(&hello)["tls_required"], true);

    // `tls://`: TLS required whatever the server's INFO says; it still starts after INFO.
    let mut c = client(
        vec![ServerAddr {
            tls: true,
            ..server(1)
        }],
        now,
    );
    c.handle_timeout(now);
    events(&mut c);
    c.handle_open(now);
    assert_eq!(events(&mut c), []);
    c.handle_read(b"INFO {\"tls_available\":true}\r\n", now);
    assert!(matches!(
        events(&mut c).as_slice(),
        [Event::StartTls { .. }]
    ));
    assert_eq!(sent(&mut c), "");
    c.handle_tls(now);
    assert!(sent(&mut c).starts_with("CONNECT "));

    // Required by us, not offered by the server: refused rather than sent in clear text.
    let mut options = Options::new("t");
    options.require_tls = true;
    let mut c = Client::<&'static str>::new(options, vec![server(1)], 1, now);
    c.handle_timeout(now);
    events(&mut c);
    c.handle_open(now);
    c.handle_read(INFO, now);
    assert_eq!(events(&mut c), [Event::Close(Disconnect::TlsUnavailable)]);
    assert_eq!(sent(&mut c), "");
}

#[test]
fn connect_carries_the_configured_credentials() {
    let now = Instant::now();
    let with = |server: ServerAddr, auth: KeyAuth| {
        let mut options = Options::new("gw");
        options.auth = auth;
        let mut c = Client::<&'static str>::new(options, vec![server], 1, now);
        let (_, hello) = connect(&mut c, now, INFO);
        connect_json(&hello)
    };
    let plain = with(server(1), KeyAuth::None);
    assert_eq!(plain["echo"], false);
    assert_eq!(plain["name"], "gw");
    for field in ["user", "pass", "auth_token", "nkey", "jwt", "sig"] {
        assert!(plain.get(field).is_none(), "{field} in {plain}");
    }

    let user = with(
        ServerAddr {
            user: Some("u".into()),
            pass: Some("p".into()),
            ..server(1)
        },
        KeyAuth::None,
    );
    assert_eq!((&user["user"], &user["pass"]), (&"u".into(), &"p".into()));

    let token = with(
        ServerAddr {
            token: Some("t0k".into()),
            ..server(1)
        },
        KeyAuth::None,
    );
    assert_eq!(token["auth_token"], "t0k");

    let verify = |key: &nkeys::KeyPair, sig: &serde_json::Value| {
        let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(sig.as_str().unwrap())
            .unwrap();
        let public = nkeys::KeyPair::from_public_key(&key.public_key()).unwrap();
        public.verify(b"n0nce", &sig).unwrap();
    };
    let key = Arc::new(nkeys::KeyPair::new_user());
    let nkey = with(server(1), KeyAuth::Nkey(key.clone()));
    assert_eq!(nkey["nkey"], key.public_key());
    verify(&key, &nkey["sig"]);

    let jwt = with(
        server(1),
        KeyAuth::Jwt {
            jwt: "eyJ.jwt.sig".into(),
            key: key.clone(),
        },
    );
    assert_eq!(jwt["jwt"], "eyJ.jwt.sig");
    assert!(jwt.get("nkey").is_none());
    verify(&key, &jwt["sig"]);
}
