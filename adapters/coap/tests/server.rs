//! The CoAP server over real UDP sockets on loopback, with the test acting
//! as the buffer writer on the other end of a real `ReadingSink`.

mod common;

use coap_lite::{CoapOption, MessageType, RequestType, ResponseType};
use common::*;
use gatewayd_adapter_coap::CoapConfig;
use gatewayd_core::{CommitError, Committed, SourceState};
use gatewayd_model::Value;

const JSON: u16 = 110;
const CBOR: u16 = 112;

fn commit_ok(ingest: gatewayd_core::Ingest) {
    let count = ingest.readings.len();
    ingest
        .reply
        .expect("the server waits for the commit")
        .send(Ok(Committed {
            first_seq: 1,
            count,
        }))
        .unwrap();
}

#[tokio::test]
async fn confirmable_json_post_is_acknowledged_2_04_only_after_commit() {
    let mut h = start(config()).await;
    let client = Client::new(h.addr).await;
    let req = post(
        0x1001,
        Some(JSON),
        br#"[{"bn":"sensor-7/","n":"t","u":"Cel","v":21.5}]"#,
    );
    client.send(&bytes(&req)).await;

    let ingest = h.next_ingest().await;
    assert_eq!(ingest.readings.len(), 1);
    assert_eq!(ingest.readings[0].device.as_str(), "coap:sensor-7");
    assert_eq!(ingest.readings[0].meta.source.as_deref(), Some("coap"));
    assert_eq!(
        ingest.readings[0].measurements[0].value,
        Some(Value::Float(21.5))
    );
    // The commit has not been answered, so no response may exist yet.
    client.assert_nothing_received();

    commit_ok(ingest);
    let resp = client.recv().await;
    assert_eq!(code(&resp), ResponseType::Changed);
    assert_eq!(resp.header.get_type(), MessageType::Acknowledgement);
    assert_eq!(resp.header.message_id, 0x1001);
    assert_eq!(resp.get_token(), req.get_token());
    assert_eq!(h.stats.snapshot().accepted_readings, 1);
    h.stop().await.unwrap();
}

#[tokio::test]
async fn cbor_post_is_acknowledged_2_04() {
    let mut h = start(config()).await;
    let client = Client::new(h.addr).await;
    // [{-2: "sensor-9/", 0: "t", 2: 1.5}]
    let mut cbor = vec![0x81, 0xA3, 0x21, 0x69];
    cbor.extend_from_slice(b"sensor-9/");
    cbor.extend_from_slice(&[0x00, 0x61, b't', 0x02, 0xF9, 0x3E, 0x00]);
    client.send(&bytes(&post(7, Some(CBOR), &cbor))).await;
    let ingest = h.next_ingest().await;
    assert_eq!(ingest.readings[0].device.as_str(), "coap:sensor-9");
    assert_eq!(
        ingest.readings[0].measurements[0].value,
        Some(Value::Float(1.5))
    );
    commit_ok(ingest);
    assert_eq!(code(&client.recv().await), ResponseType::Changed);
    h.stop().await.unwrap();
}

#[tokio::test]
async fn records_without_base_name_belong_to_the_peer_address() {
    let mut h = start(config()).await;
    let client = Client::new(h.addr).await;
    client
        .send(&bytes(&post(3, Some(JSON), br#"[{"n":"t","v":1}]"#)))
        .await;
    let ingest = h.next_ingest().await;
    assert_eq!(ingest.readings[0].device.as_str(), "coap:127.0.0.1");
    commit_ok(ingest);
    client.recv().await;
    h.stop().await.unwrap();
}

#[tokio::test]
async fn malformed_unsupported_and_oversized_requests_get_diagnostics_and_reach_nothing() {
    let mut h = start(CoapConfig {
        max_payload_bytes: 512,
        ..config()
    })
    .await;
    let client = Client::new(h.addr).await;
    let big = format!(r#"[{{"n":"t","vs":"{}"}}]"#, "x".repeat(600));
    let cases: Vec<(coap_lite::Packet, ResponseType, &str)> = vec![
        (
            post(
                1,
                Some(JSON),
                br#"[{"n":"a","v":1},{"n":"b","v":2},{"n":"c","v":"hot"}]"#,
            ),
            ResponseType::BadRequest,
            r#"record 2: field "v" must be a number"#,
        ),
        (
            post(2, Some(JSON), b"{not json"),
            ResponseType::BadRequest,
            "not valid JSON",
        ),
        (
            post(3, Some(JSON), b"[]"),
            ResponseType::BadRequest,
            "empty",
        ),
        (
            post(4, Some(CBOR), &[0x9F, 0xFF]),
            ResponseType::BadRequest,
            "indefinite",
        ),
        (
            post(5, Some(JSON), br#"[{"n":"t","v":1,"x_":2}]"#),
            ResponseType::BadRequest,
            "must be understood",
        ),
        (
            post(6, None, br#"[{"n":"t","v":1}]"#),
            ResponseType::UnsupportedContentFormat,
            "set 110 (application/senml+json) or 112 (application/senml+cbor)",
        ),
        (
            post(7, Some(50), br#"[{"n":"t","v":1}]"#),
            ResponseType::UnsupportedContentFormat,
            "unsupported Content-Format 50",
        ),
        (
            post(8, Some(JSON), big.as_bytes()),
            ResponseType::RequestEntityTooLarge,
            "512 bytes",
        ),
        (
            request(9, RequestType::Post, &["nope"], Some(JSON), b"[]"),
            ResponseType::NotFound,
            "/nope",
        ),
        (
            request(10, RequestType::Get, &["telemetry"], None, b""),
            ResponseType::MethodNotAllowed,
            "use POST",
        ),
    ];
    for (req, expected, needle) in cases {
        client.send(&bytes(&req)).await;
        let resp = client.recv().await;
        assert_eq!(code(&resp), expected, "mid {}", req.header.message_id);
        assert_eq!(resp.header.message_id, req.header.message_id);
        let diag = diagnostic(&resp);
        assert!(diag.contains(needle), "{diag:?} lacks {needle:?}");
        if expected == ResponseType::RequestEntityTooLarge {
            assert_eq!(uint(&resp, CoapOption::Size1), Some(512));
        }
    }
    h.assert_no_ingest();
    let s = h.stats.snapshot();
    assert_eq!(s.rejected_bad_request, 5);
    assert_eq!(s.rejected_unsupported_content_format, 2);
    assert_eq!(s.rejected_too_large, 1);
    assert_eq!(s.rejected_not_found, 1);
    assert_eq!(s.rejected_method_not_allowed, 1);

    // The server keeps serving.
    client
        .send(&bytes(&post(11, Some(JSON), br#"[{"n":"t","v":1}]"#)))
        .await;
    commit_ok(h.next_ingest().await);
    assert_eq!(code(&client.recv().await), ResponseType::Changed);
    h.stop().await.unwrap();
}

#[tokio::test]
async fn garbage_datagrams_are_ignored_counted_and_do_not_stop_the_server() {
    let mut h = start(config()).await;
    let client = Client::new(h.addr).await;
    // Too short, version 3, version 2, empty: not CoAP.
    for g in [&b"\x00"[..], &[0xFF; 300], b"\x81\x02\x00\x01", b""] {
        client.send(g).await;
    }
    client.sync(0x5555).await;
    client.assert_nothing_received();
    h.assert_no_ingest();
    assert_eq!(h.stats.snapshot().malformed_datagrams, 4);
    client
        .send(&bytes(&post(1, Some(JSON), br#"[{"n":"t","v":1}]"#)))
        .await;
    commit_ok(h.next_ingest().await);
    assert_eq!(code(&client.recv().await), ResponseType::Changed);
    h.stop().await.unwrap();
}

#[tokio::test]
async fn retransmitted_confirmable_request_is_ingested_once_and_gets_the_same_response() {
    let mut h = start(config()).await;
    let client = Client::new(h.addr).await;
    let req = bytes(&post(
        0x2222,
        Some(JSON),
        br#"[{"bn":"s1/","n":"t","v":1}]"#,
    ));
    client.send(&req).await;
    let ingest = h.next_ingest().await;

    // Retransmission while the commit is outstanding: not ingested, and the
    // ACK is not sent early.
    client.send(&req).await;
    client.sync(1).await;
    h.assert_no_ingest();

    commit_ok(ingest);
    let first = client.recv_raw().await;
    // Retransmission after the answer: the very same response bytes.
    client.send(&req).await;
    let second = client.recv_raw().await;
    assert_eq!(first, second);
    client.sync(2).await;
    h.assert_no_ingest();
    let s = h.stats.snapshot();
    assert_eq!(s.duplicates, 2);
    assert_eq!(s.accepted_requests, 1);
    h.stop().await.unwrap();
}

#[tokio::test]
async fn same_message_id_from_another_peer_is_a_new_request() {
    let mut h = start(config()).await;
    let a = Client::new(h.addr).await;
    let b = Client::new(h.addr).await;
    let req = bytes(&post(9, Some(JSON), br#"[{"n":"t","v":1}]"#));
    a.send(&req).await;
    commit_ok(h.next_ingest().await);
    a.recv().await;
    b.send(&req).await;
    commit_ok(h.next_ingest().await);
    assert_eq!(code(&b.recv().await), ResponseType::Changed);
    h.stop().await.unwrap();
}

#[tokio::test]
async fn buffer_full_is_answered_5_03_with_max_age() {
    let mut h = start(config()).await;
    let client = Client::new(h.addr).await;
    client
        .send(&bytes(&post(1, Some(JSON), br#"[{"n":"t","v":1}]"#)))
        .await;
    let ingest = h.next_ingest().await;
    ingest
        .reply
        .unwrap()
        .send(Err(CommitError::BufferFull))
        .unwrap();
    let resp = client.recv().await;
    assert_eq!(code(&resp), ResponseType::ServiceUnavailable);
    assert_eq!(uint(&resp, CoapOption::MaxAge), Some(5));
    assert!(diagnostic(&resp).contains("buffer full"));
    assert_eq!(h.stats.snapshot().rejected_unavailable, 1);
    h.stop().await.unwrap();
}

#[tokio::test]
async fn storage_error_is_answered_5_00() {
    let mut h = start(config()).await;
    let client = Client::new(h.addr).await;
    client
        .send(&bytes(&post(1, Some(JSON), br#"[{"n":"t","v":1}]"#)))
        .await;
    let ingest = h.next_ingest().await;
    ingest
        .reply
        .unwrap()
        .send(Err(CommitError::Storage("disk I/O error".into())))
        .unwrap();
    let resp = client.recv().await;
    assert_eq!(code(&resp), ResponseType::InternalServerError);
    assert!(diagnostic(&resp).contains("disk I/O error"));
    h.stop().await.unwrap();
}

#[tokio::test]
async fn full_pipeline_queue_is_answered_5_03() {
    let h = start_with_queue(config(), 1).await;
    let client = Client::new(h.addr).await;
    // The first submission occupies the only queue slot (never read).
    client
        .send(&bytes(&post(1, Some(JSON), br#"[{"n":"t","v":1}]"#)))
        .await;
    client
        .send(&bytes(&post(2, Some(JSON), br#"[{"n":"t","v":2}]"#)))
        .await;
    let resp = client.recv().await;
    assert_eq!(resp.header.message_id, 2);
    assert_eq!(code(&resp), ResponseType::ServiceUnavailable);
    assert!(diagnostic(&resp).contains("queue is full"));
    h.shutdown.cancel();
    // The held submission is never committed: dropping the receiver
    // resolves its ticket as Closed, which the drain answers with 5.03.
    drop(h.ingest);
    within(h.task).await.unwrap().unwrap();
    let resp = client.recv().await;
    assert_eq!(resp.header.message_id, 1);
    assert_eq!(code(&resp), ResponseType::ServiceUnavailable);
}

#[tokio::test]
async fn saturated_server_answers_5_03_instead_of_queueing() {
    let mut h = start(CoapConfig {
        max_concurrent_requests: 1,
        ..config()
    })
    .await;
    let client = Client::new(h.addr).await;
    client
        .send(&bytes(&post(1, Some(JSON), br#"[{"n":"t","v":1}]"#)))
        .await;
    let held = h.next_ingest().await;
    client
        .send(&bytes(&post(2, Some(JSON), br#"[{"n":"t","v":2}]"#)))
        .await;
    let resp = client.recv().await;
    assert_eq!(resp.header.message_id, 2);
    assert_eq!(code(&resp), ResponseType::ServiceUnavailable);
    assert!(uint(&resp, CoapOption::MaxAge).is_some());
    commit_ok(held);
    let resp = client.recv().await;
    assert_eq!(resp.header.message_id, 1);
    assert_eq!(code(&resp), ResponseType::Changed);
    h.stop().await.unwrap();
}

#[tokio::test]
async fn non_confirmable_request_gets_a_non_response_after_commit() {
    let mut h = start(config()).await;
    let client = Client::new(h.addr).await;
    let mut req = post(0x3333, Some(JSON), br#"[{"n":"t","v":1}]"#);
    req.header.set_type(MessageType::NonConfirmable);
    client.send(&bytes(&req)).await;
    let ingest = h.next_ingest().await;
    client.assert_nothing_received();
    commit_ok(ingest);
    let resp = client.recv().await;
    assert_eq!(resp.header.get_type(), MessageType::NonConfirmable);
    assert_eq!(resp.get_token(), req.get_token());
    assert_eq!(code(&resp), ResponseType::Changed);
    h.stop().await.unwrap();
}

#[tokio::test]
async fn block1_upload_over_udp_is_reassembled_and_committed_once() {
    let mut h = start(config()).await;
    let client = Client::new(h.addr).await;
    let records: Vec<String> = (0..40)
        .map(|i| format!(r#"{{"n":"m{i}","v":{i}}}"#))
        .collect();
    let body = format!(r#"[{{"bn":"bulk/"}},{}]"#, records.join(","));
    assert!(body.len() > 256);
    let chunks: Vec<&[u8]> = body.as_bytes().chunks(64).collect();
    let last = chunks.len() - 1;
    for (i, chunk) in chunks.iter().enumerate() {
        let mut req = post(100 + i as u16, Some(JSON), chunk);
        let v = ((i as u32) << 4) | (u32::from(i < last) << 3) | 2; // szx 2 = 64 bytes
        req.add_option(
            CoapOption::Block1,
            v.to_be_bytes()
                .iter()
                .skip_while(|b| **b == 0)
                .copied()
                .collect(),
        );
        client.send(&bytes(&req)).await;
        if i < last {
            let resp = client.recv().await;
            assert_eq!(code(&resp), ResponseType::Continue);
        }
    }
    let ingest = h.next_ingest().await;
    assert_eq!(ingest.readings[0].device.as_str(), "coap:bulk");
    assert_eq!(ingest.readings[0].measurements.len(), 40);
    commit_ok(ingest);
    let resp = client.recv().await;
    assert_eq!(code(&resp), ResponseType::Changed);
    assert!(resp.get_first_option(CoapOption::Block1).is_some());
    h.stop().await.unwrap();
}

#[tokio::test]
async fn datagram_above_the_limit_gets_4_13_with_a_block_size_hint() {
    let mut h = start(config()).await;
    let client = Client::new(h.addr).await;
    let req = post(0x4444, Some(JSON), &[b' '; 2000]);
    client.send(&bytes(&req)).await;
    let resp = client.recv().await;
    assert_eq!(resp.header.message_id, 0x4444);
    assert_eq!(code(&resp), ResponseType::RequestEntityTooLarge);
    assert_eq!(uint(&resp, CoapOption::Size1), Some(64 * 1024));
    assert_eq!(uint(&resp, CoapOption::Block1).map(|v| v & 7), Some(6));
    client.sync(1).await;
    h.assert_no_ingest();
    h.stop().await.unwrap();
}

#[tokio::test]
async fn shutdown_answers_in_flight_requests_before_returning() {
    let mut h = start(config()).await;
    let client = Client::new(h.addr).await;
    client
        .send(&bytes(&post(0x0BAD, Some(JSON), br#"[{"n":"t","v":1}]"#)))
        .await;
    let ingest = h.next_ingest().await;
    h.shutdown.cancel();
    // Had the source returned without draining, this response would never
    // come (its socket would be closed).
    commit_ok(ingest);
    let resp = client.recv().await;
    assert_eq!(resp.header.message_id, 0x0BAD);
    assert_eq!(code(&resp), ResponseType::Changed);
    within(h.task).await.unwrap().unwrap();
    assert_eq!(*h.health.borrow(), SourceState::Stopped);
}
