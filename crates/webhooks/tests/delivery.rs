//! The guarded sender against the scriptable receiver over real loopback HTTP.
//! The policy allowlists 127.0.0.0/8 so the receiver is reachable; everything else stays refused.

use aragora_core::event::Event;
use aragora_webhooks::receiver::{Behaviour, Receiver, ReceiverConfig, ReceiverHandle};
use aragora_webhooks::resolve::validate_url_resolved;
use aragora_webhooks::{
    DeliveryRequest, ErrorClass, HeaderInput, Outcome, Policy, RetryPolicy, Sender, SenderConfig,
    StubResolver, build_headers,
};
use bytes::Bytes;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

fn now_secs() -> i64 {
    aragora_core::time::now_ms() / 1000
}

fn body() -> Bytes {
    let ev = Event {
        event_type: "debate.completed".into(),
        event_id: "evt-789".into(),
        timestamp: "2024-01-20T12:00:00Z".into(),
        data: serde_json::json!({"debate_id": "deb-123", "task": "Design a rate limiter",
            "outcome": "consensus", "consensus_strength": 0.92}),
    };
    Bytes::from(serde_json::to_vec(&ev).expect("json"))
}

fn request(url: &str, secret: &str, id: &str, attempt: u32, ts: i64) -> DeliveryRequest {
    let body = body();
    let headers = build_headers(
        &HeaderInput {
            message_id: id,
            event_type: "debate.completed",
            attempt,
            secret,
            previous_secrets: &[],
            timestamp: ts,
        },
        &body,
    )
    .expect("headers");
    DeliveryRequest {
        url: url.to_string(),
        body,
        headers,
    }
}

fn sender_with(policy: Policy, resolver: Arc<StubResolver>, timeout: Duration) -> Sender {
    Sender::new(SenderConfig {
        timeout,
        connect_timeout: Duration::from_secs(2),
        policy,
        resolver,
        ..SenderConfig::default()
    })
    .expect("sender")
}

fn sender(timeout: Duration) -> Sender {
    sender_with(
        Policy::allow_loopback(),
        Arc::new(StubResolver::new()),
        timeout,
    )
}

async fn receiver() -> ReceiverHandle {
    Receiver::start(ReceiverConfig::new(SECRET))
        .await
        .expect("receiver")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivers_and_both_signatures_verify() {
    let rx = receiver().await;
    let s = sender(Duration::from_secs(10));
    let req = request(&rx.url(), SECRET, "dlv-1", 1, now_secs());
    let sent_body = req.body.clone();
    let a = s.send(req).await;
    assert_eq!(a.outcome, Outcome::Success, "{a:?}");
    assert_eq!(a.status_code, Some(200));
    assert_eq!(a.error_class, None);
    assert_eq!(a.dialled, Some(rx.addr()));
    assert_eq!(a.response_body_prefix, "ok");
    assert!(!a.body_truncated);
    assert!(
        a.response_headers
            .iter()
            .any(|(k, v)| k == "content-length" && v == "2")
    );

    let got = rx.received();
    assert_eq!(got.len(), 1);
    let r = &got[0];
    assert!(r.sha256_valid && r.standard_valid, "{r:?}");
    assert_eq!(r.body, sent_body, "the exact signed bytes arrive");
    assert_eq!(r.webhook_id.as_deref(), Some("dlv-1"));
    assert_eq!(r.delivery_id.as_deref(), Some("dlv-1"));
    assert_eq!(r.event_type.as_deref(), Some("debate.completed"));
    let ua = r.headers["user-agent"].to_str().expect("ascii");
    assert_eq!(ua, aragora_webhooks::USER_AGENT);
    assert_eq!(r.headers["content-type"], "application/json");
    assert!(
        r.headers.get("accept-encoding").is_none(),
        "no decompression is offered"
    );
    let ev: Event = serde_json::from_slice(&r.body).expect("guide payload");
    assert_eq!(ev.event_id, "evt-789");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_keep_the_id_are_resigned_and_counted_as_duplicates() {
    let rx = receiver().await;
    rx.script([Behaviour::Status(500)]);
    let s = sender(Duration::from_secs(10));
    let ts = now_secs();
    let first = s.send(request(&rx.url(), SECRET, "dlv-2", 1, ts)).await;
    assert_eq!(first.outcome, Outcome::Retry);
    assert_eq!(first.error_class, Some(ErrorClass::Http));
    assert_eq!(first.status_code, Some(500));
    let second = s.send(request(&rx.url(), SECRET, "dlv-2", 2, ts + 1)).await;
    assert_eq!(second.outcome, Outcome::Success);
    let third = s.send(request(&rx.url(), SECRET, "dlv-2", 3, ts + 2)).await;
    assert_eq!(third.outcome, Outcome::Success);

    assert_eq!(rx.count_for("dlv-2"), 3);
    assert_eq!(rx.acknowledged(), 1);
    assert_eq!(rx.duplicate_acks(), vec![("dlv-2".to_string(), 2)]);
    let got = rx.received();
    assert!(got.iter().all(|r| r.sha256_valid && r.standard_valid));
    assert_ne!(got[0].webhook_timestamp, got[1].webhook_timestamp);
    assert_ne!(
        got[0].headers["webhook-signature"],
        got[1].headers["webhook-signature"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_secret_is_refused_by_the_receiver() {
    let rx = receiver().await;
    let s = sender(Duration::from_secs(10));
    let a = s
        .send(request(
            &rx.url(),
            "some-other-secret",
            "dlv-3",
            1,
            now_secs(),
        ))
        .await;
    assert_eq!(a.status_code, Some(401));
    assert_eq!(a.outcome, Outcome::Retry, "4xx other than 410 is retried");
    assert_eq!(rx.invalid(), 1);
    let r = &rx.received()[0];
    assert!(!r.sha256_valid && !r.standard_valid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gone_and_too_many_requests() {
    let rx = receiver().await;
    let s = sender(Duration::from_secs(10));
    rx.script([
        Behaviour::Gone,
        Behaviour::TooManyRequests {
            retry_after: "7".into(),
        },
        Behaviour::TooManyRequests {
            retry_after: httpdate::fmt_http_date(
                std::time::SystemTime::now() + Duration::from_secs(120),
            ),
        },
    ]);
    let gone = s
        .send(request(&rx.url(), SECRET, "dlv-4", 1, now_secs()))
        .await;
    assert_eq!(gone.outcome, Outcome::Gone);
    assert_eq!(gone.status_code, Some(410));
    assert!(gone.outcome.breaker_failure());

    let slow = s
        .send(request(&rx.url(), SECRET, "dlv-5", 1, now_secs()))
        .await;
    assert_eq!(slow.outcome, Outcome::Retry);
    assert_eq!(slow.status_code, Some(429));
    assert_eq!(slow.retry_after, Some(Duration::from_secs(7)));
    let policy = RetryPolicy::default();
    assert_eq!(
        policy.next_delay(1, None, slow.retry_after),
        Some(Duration::from_secs(7))
    );

    let dated = s
        .send(request(&rx.url(), SECRET, "dlv-6", 1, now_secs()))
        .await;
    let ra = dated.retry_after.expect("http-date Retry-After");
    assert!(
        ra > Duration::from_secs(100) && ra <= Duration::from_secs(120),
        "{ra:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_are_not_followed() {
    let rx = receiver().await;
    let target = receiver().await;
    let s = sender(Duration::from_secs(10));

    rx.set_behaviour(Behaviour::redirect_to_metadata());
    let a = s
        .send(request(&rx.url(), SECRET, "dlv-7", 1, now_secs()))
        .await;
    assert_eq!(a.status_code, Some(302));
    assert_eq!(a.outcome, Outcome::Retry);
    assert_eq!(a.error_class, Some(ErrorClass::Http));
    assert!(
        a.error_message
            .as_deref()
            .is_some_and(|m| m.contains("redirect"))
    );
    assert!(
        a.response_headers
            .iter()
            .any(|(k, v)| k == "location" && v == "http://169.254.169.254/latest/meta-data/")
    );
    assert_eq!(a.dialled, Some(rx.addr()));

    // A redirect to an address the policy DOES allow is not followed either.
    rx.set_behaviour(Behaviour::Redirect {
        location: target.url(),
    });
    let b = s
        .send(request(&rx.url(), SECRET, "dlv-8", 1, now_secs()))
        .await;
    assert_eq!(b.status_code, Some(302));
    assert_eq!(rx.count(), 2);
    assert_eq!(target.count(), 0, "the redirect target was never contacted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gigabyte_body_stops_at_the_cap() {
    let rx = receiver().await;
    rx.set_behaviour(Behaviour::huge_1gb());
    let timeout = Duration::from_secs(20);
    let s = sender(timeout);
    let started = Instant::now();
    let a = s
        .send(request(&rx.url(), SECRET, "dlv-9", 1, now_secs()))
        .await;
    let took = started.elapsed();
    // Documented choice: the status line decides; the body is cut at the cap.
    assert_eq!(a.outcome, Outcome::Success, "{a:?}");
    assert_eq!(a.status_code, Some(200));
    assert_eq!(a.error_class, None);
    assert!(a.body_truncated);
    assert_eq!(a.response_body_prefix.len(), 1024);
    assert!(a.response_body_prefix.bytes().all(|b| b == b'x'));
    assert!(
        took < timeout,
        "stopped by the cap, not the timeout: {took:?}"
    );
    let streamed = rx.bytes_streamed();
    assert!(
        streamed < 64 << 20,
        "the sender stopped reading: only {streamed} of {} bytes were produced",
        1u64 << 30
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hanging_receiver_times_out() {
    let rx = receiver().await;
    rx.set_behaviour(Behaviour::Hang);
    let timeout = Duration::from_millis(800);
    let s = sender(timeout);
    let a = s
        .send(request(&rx.url(), SECRET, "dlv-10", 1, now_secs()))
        .await;
    assert_eq!(a.error_class, Some(ErrorClass::Timeout), "{a:?}");
    assert_eq!(a.outcome, Outcome::Retry);
    assert_eq!(a.status_code, None);
    assert!(a.duration_ms >= 800, "{}", a.duration_ms);
    assert!(rx.wait_for(1, Duration::from_secs(5)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_drip_is_cut_by_the_total_timeout() {
    let rx = receiver().await;
    // 1000 bytes at one per 20 ms would take 20 s.
    rx.set_behaviour(Behaviour::SlowDrip {
        bytes: 1000,
        interval: Duration::from_millis(20),
    });
    let s = sender(Duration::from_millis(1000));
    let a = s
        .send(request(&rx.url(), SECRET, "dlv-11", 1, now_secs()))
        .await;
    assert_eq!(a.status_code, Some(200));
    assert_eq!(a.outcome, Outcome::Success, "the 2xx status decides: {a:?}");
    assert!(a.body_truncated);
    assert!(a.response_body_prefix.len() < 1000);
    assert!(a.duration_ms < 10_000, "{}", a.duration_ms);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_policy_refuses_loopback_without_dialling() {
    let rx = receiver().await;
    let s = sender_with(
        Policy::default(),
        Arc::new(StubResolver::new()),
        Duration::from_secs(5),
    );
    let a = s
        .send(request(&rx.url(), SECRET, "dlv-12", 1, now_secs()))
        .await;
    assert_eq!(a.error_class, Some(ErrorClass::Blocked));
    assert_eq!(a.outcome, Outcome::Failed);
    assert!(!a.outcome.breaker_failure());
    assert_eq!(a.dialled, None);
    assert_eq!(rx.count(), 0);
    // Every-send validation also catches URLs that became invalid.
    let port = rx.addr().port();
    for url in [
        format!("http://user:pw@127.0.0.1:{port}/"),
        format!("ftp://127.0.0.1:{port}/"),
        format!("http://2130706433:{port}/"),
    ] {
        let a = sender(Duration::from_secs(5))
            .send(request(&url, SECRET, "dlv-13", 1, now_secs()))
            .await;
        assert_eq!(a.outcome, Outcome::Failed, "{url}");
    }
    assert_eq!(rx.count(), 0);
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_are_resolved_once_vetted_and_pinned() {
    let rx = receiver().await;
    let port = rx.addr().port();
    let stub = Arc::new(
        StubResolver::new()
            .with("receiver.example.com", &[ip("127.0.0.1")])
            .with("private.example.com", &[ip("10.0.0.5")])
            .with("mixed.example.com", &[ip("127.0.0.1"), ip("192.168.1.10")])
            .with("meta.example.com", &[ip("169.254.169.254")]),
    );
    let s = sender_with(
        Policy::allow_loopback(),
        stub.clone(),
        Duration::from_secs(5),
    );

    // An allowlisted answer goes through the pinned DNS path to the vetted address.
    let ok = s
        .send(request(
            &format!("http://receiver.example.com:{port}/hook"),
            SECRET,
            "dlv-14",
            1,
            now_secs(),
        ))
        .await;
    assert_eq!(ok.outcome, Outcome::Success, "{ok:?}");
    assert_eq!(ok.dialled, Some(rx.addr()));
    assert_eq!(stub.calls(), 1, "resolved exactly once for one attempt");

    for host in [
        "private.example.com",
        "mixed.example.com",
        "meta.example.com",
    ] {
        let before = stub.calls();
        let a = s
            .send(request(
                &format!("http://{host}:{port}/hook"),
                SECRET,
                "dlv-15",
                1,
                now_secs(),
            ))
            .await;
        assert_eq!(a.error_class, Some(ErrorClass::Blocked), "{host}: {a:?}");
        assert_eq!(a.outcome, Outcome::Failed);
        assert_eq!(a.dialled, None);
        assert_eq!(
            a.error_message.as_deref(),
            Some("destination is not allowed"),
            "no resolver detail leaks"
        );
        assert_eq!(stub.calls(), before + 1);
    }
    let unknown = s
        .send(request(
            &format!("http://nowhere.example.com:{port}/"),
            SECRET,
            "dlv-16",
            1,
            now_secs(),
        ))
        .await;
    assert_eq!(unknown.error_class, Some(ErrorClass::Dns));
    assert_eq!(unknown.outcome, Outcome::Retry);
    assert_eq!(
        rx.count(),
        1,
        "only the vetted delivery reached the receiver"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_rebinding_is_refused_at_send_time() {
    let rx = receiver().await;
    let port = rx.addr().port();
    let stub = Arc::new(StubResolver::new());
    // Public at registration, then private when the worker sends.
    stub.script(
        "rebind.example.com",
        vec![vec![ip("93.184.216.34")], vec![ip("127.0.0.1")]],
    );
    // The allowlist covers only 127.0.0.2, so the rebinding target 127.0.0.1 stays refused.
    let policy = Policy::from_env_str("127.0.0.2/32").expect("policy");
    let url = format!("http://rebind.example.com:{port}/hook");
    validate_url_resolved(&url, &policy, stub.as_ref())
        .await
        .expect("public at registration");
    let s = sender_with(policy, stub.clone(), Duration::from_secs(5));
    let a = s.send(request(&url, SECRET, "dlv-17", 1, now_secs())).await;
    assert_eq!(a.error_class, Some(ErrorClass::Blocked), "{a:?}");
    assert_eq!(a.outcome, Outcome::Failed);
    assert_eq!(a.dialled, None);
    assert_eq!(rx.count(), 0, "nothing reached the private address");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_and_tls_failures_are_classified() {
    // A port with nothing listening.
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let closed = l.local_addr().expect("addr");
    drop(l);
    let s = sender(Duration::from_secs(5));
    let a = s
        .send(request(
            &format!("http://{closed}/"),
            SECRET,
            "dlv-18",
            1,
            now_secs(),
        ))
        .await;
    assert_eq!(a.error_class, Some(ErrorClass::Connect), "{a:?}");
    assert_eq!(a.outcome, Outcome::Retry);
    assert_eq!(a.dialled, Some(closed));

    // https:// to a plain-HTTP receiver fails the TLS handshake.
    let rx = receiver().await;
    let a = s
        .send(request(
            &format!("https://{}/", rx.addr()),
            SECRET,
            "dlv-19",
            1,
            now_secs(),
        ))
        .await;
    assert_eq!(a.error_class, Some(ErrorClass::Tls), "{a:?}");
    assert_eq!(a.outcome, Outcome::Retry);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_for_wakes_on_arrival_and_times_out_honestly() {
    let rx = receiver().await;
    assert!(!rx.wait_for(1, Duration::from_millis(100)).await);
    let s = sender(Duration::from_secs(10));
    let url = rx.url();
    let sends = tokio::spawn(async move {
        for i in 0..20 {
            let a = s
                .send(request(&url, SECRET, &format!("dlv-w{i}"), 1, now_secs()))
                .await;
            assert!(a.is_success(), "{a:?}");
        }
    });
    assert!(rx.wait_for_acknowledged(20, Duration::from_secs(30)).await);
    sends.await.expect("sender task");
    assert_eq!(rx.count(), 20);
    assert!(rx.duplicate_acks().is_empty());
    let got = rx.received();
    assert!(got.windows(2).all(|w| w[0].arrived <= w[1].arrived));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_grace_period_lets_the_old_secret_verify() {
    let old = "old-secret-for-rotation";
    let new = aragora_webhooks::signing::generate_secret();
    // A receiver still configured with the old secret checks webhook-signature only.
    let rx = Receiver::start(ReceiverConfig {
        require_valid_signatures: false,
        ..ReceiverConfig::new(old)
    })
    .await
    .expect("receiver");
    let body = body();
    let headers = build_headers(
        &HeaderInput {
            message_id: "dlv-20",
            event_type: "debate.completed",
            attempt: 1,
            secret: &new,
            previous_secrets: &[old],
            timestamp: now_secs(),
        },
        &body,
    )
    .expect("headers");
    let a = sender(Duration::from_secs(5))
        .send(DeliveryRequest {
            url: rx.url(),
            body,
            headers,
        })
        .await;
    assert!(a.is_success());
    let r = &rx.received()[0];
    assert!(
        r.standard_valid,
        "old secret verifies the rotated signature list"
    );
    assert!(
        !r.sha256_valid,
        "X-Signature-SHA256 carries the current secret only"
    );
}
