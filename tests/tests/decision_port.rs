//! The decision port as a gRPC client that is not Envoy sees it: hyper's
//! HTTP/2 client sends `Check` calls framed by hand, well and badly. Each
//! bad one gets a gRPC status (which Envoy turns into a refusal), a log
//! line, and the port goes on answering.

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, Request};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tollgate_e2e::{DecisionService, Setup};

const CHECK: &str = "/envoy.service.auth.v3.Authorization/Check";

/// gRPC's framing: a compressed flag, a big-endian length, the message.
fn framed(compressed: u8, message: &[u8]) -> Vec<u8> {
    let mut out = BytesMut::new();
    out.put_u8(compressed);
    out.put_u32(message.len() as u32);
    out.put_slice(message);
    out.to_vec()
}

/// An answer: its `grpc-status` (from the head for a status alone, else
/// from the trailers) and its message bytes.
struct Answer {
    status: Option<String>,
    message: Bytes,
}

async fn connect(service: &DecisionService) -> SendRequest<Full<Bytes>> {
    let tcp = tokio::net::TcpStream::connect(service.addr).await.unwrap();
    // As gRPC clients do (Envoy, tonic, grpc-go): otherwise each small
    // frame after the first waits on the server's delayed ACK.
    tcp.set_nodelay(true).unwrap();
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(connection);
    sender
}

async fn call(sender: &mut SendRequest<Full<Bytes>>, path: &str, body: Vec<u8>) -> Answer {
    let request = Request::post(format!("http://tollgate{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let head = response.headers().clone();
    let collected = response.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned().unwrap_or_else(HeaderMap::new);
    let status = head
        .get("grpc-status")
        .or_else(|| trailers.get("grpc-status"))
        .map(|v| v.to_str().unwrap().to_string());
    Answer {
        status,
        message: collected.to_bytes(),
    }
}

#[tokio::test]
async fn bad_check_calls_get_a_grpc_status_and_a_log_line_and_the_port_goes_on() {
    let service = DecisionService::start(Setup::default());
    let mut sender = connect(&service).await;

    // An empty `CheckRequest` is valid protobuf with nothing in it: the
    // call succeeds and the answer is tollgate's refusal of the request.
    let empty = call(&mut sender, CHECK, framed(0, b"")).await;
    assert_eq!(empty.status.as_deref(), Some("0"));
    let text = String::from_utf8_lossy(&empty.message);
    assert!(text.contains("malformed_request"), "{text:?}");

    // A message in many DATA frames (hyper's client sends 16 KiB each):
    // field 15, unknown to tollgate and skipped, with 100 KiB in it.
    let mut padded = vec![0x7a];
    let mut length = 100 * 1024;
    while length >= 0x80 {
        padded.push((length as u8 & 0x7f) | 0x80);
        length >>= 7;
    }
    padded.push(length as u8);
    padded.resize(padded.len() + 100 * 1024, 0);
    let joined = call(&mut sender, CHECK, framed(0, &padded)).await;
    assert_eq!(joined.status.as_deref(), Some("0"));
    assert!(String::from_utf8_lossy(&joined.message).contains("malformed_request"));

    let oversized = framed(0, &vec![b'x'; (4 << 20) + 1]);
    let two = [framed(0, b""), framed(0, b"")].concat();
    let mut short = framed(0, b"\x0a\x00");
    short[4] = 9;
    for (body, code, what) in [
        (framed(0, b"\xff\xff\xff\xff"), "3", "not protobuf"),
        (framed(1, b"\x0a\x00"), "12", "compressed"),
        (Vec::new(), "13", "no message"),
        (two, "13", "two messages"),
        (short, "13", "shorter than its length"),
        (oversized, "8", "larger than 4 MiB"),
    ] {
        let answer = call(&mut sender, CHECK, body).await;
        assert_eq!(answer.status.as_deref(), Some(code), "{what}");
        assert!(answer.message.is_empty(), "{what}");
    }
    service.wait_log("ext_authz check refused unread");

    // Other methods of Envoy's service are not served.
    let other = call(
        &mut sender,
        "/envoy.service.auth.v3.Authorization/Other",
        framed(0, b""),
    )
    .await;
    assert_eq!(other.status.as_deref(), Some("12"));

    // Still answering, on this connection and on a new one.
    for sender in [&mut sender, &mut connect(&service).await] {
        let again = call(sender, CHECK, framed(0, b"")).await;
        assert_eq!(again.status.as_deref(), Some("0"));
    }
    assert!(!service.logs().contains("panicked"), "{}", service.logs());
}

#[tokio::test]
async fn an_http1_client_is_refused_not_hung() {
    // gRPC is HTTP/2 only; curl over HTTP/1.1 gets a closed connection,
    // promptly, and the port still serves HTTP/2.
    let service = DecisionService::start(Setup::default());
    let out = tollgate_e2e::curl(&[
        "--http1.1",
        "--max-time",
        "10",
        "-X",
        "POST",
        &format!("http://{}{CHECK}", service.addr),
    ])
    .await;
    assert_ne!(out.exit, 0, "an HTTP/1.1 call was answered: {}", out.body);
    assert_ne!(out.exit, 28, "curl timed out: {}", out.stderr);
    let mut sender = connect(&service).await;
    let answer = call(&mut sender, CHECK, framed(0, b"")).await;
    assert_eq!(answer.status.as_deref(), Some("0"));
}
