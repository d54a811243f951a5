//! Bodies stream through tollgate: a 1 GiB upload and a 1 GiB download pass
//! with the proxy's memory staying small.

use tollgate_e2e::{Setup, Tollgate, Upstream};

const GIB: u64 = 1 << 30;
/// Far below the gigabyte that passes through; well above the proxy's
/// working set (tens of MiB including the catalog and policy engine).
const PEAK_RSS_LIMIT_KIB: u64 = 128 * 1024;

const BULK_CATALOG: &str = r#"
tool: bulk
description: bulk transfer service used by the streaming test
endpoints:
  - hosts: [bulk.test]
    routes:
      - { method: GET, path: "/blob", action: blob.get, risk: read }
      - { method: PUT, path: "/blob", action: blob.put, risk: write }
"#;

#[tokio::test]
async fn gigabyte_upload_and_download_stream_with_bounded_memory() {
    let upstream = Upstream::http().await;
    let tg = Tollgate::start(Setup {
        resolve: vec![("bulk.test:80".into(), upstream.addr)],
        extra_catalog: vec![("bulk.yaml".into(), BULK_CATALOG.into())],
        policies: Some(vec![(
            "bulk.cedar".into(),
            "@id(\"bulk\")\npermit(principal, action in Action::\"bulk\", resource);\n".into(),
        )]),
        ..Setup::default()
    });

    let upload = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "head -c {GIB} /dev/zero | curl -sS --noproxy '' -x {} -T - http://bulk.test/blob -o /dev/null -w '%{{http_code}}'",
            tg.proxy_url()
        ))
        .output()
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&upload.stdout),
        "200",
        "curl: {}\naudit: {}\nlogs: {}",
        String::from_utf8_lossy(&upload.stderr),
        tg.stdout_text(),
        tg.logs()
    );
    let seen = upstream.requests();
    assert_eq!(seen[0].method, "PUT");
    assert_eq!(
        seen[0].body_len, GIB,
        "the upstream received the whole upload"
    );

    let out = tg
        .curl(&[
            "-H",
            &format!("x-test-body-bytes: {GIB}"),
            "-o",
            "/dev/null",
            "http://bulk.test/blob",
        ])
        .await;
    assert_eq!(out.status, 200, "{}", out.stderr);
    assert_eq!(out.size_download, GIB);

    let put = tg.wait_audit(|l| l["action"] == "bulk:blob.put");
    assert_eq!(put["bytes_in"], GIB);
    let get = tg.wait_audit(|l| l["action"] == "bulk:blob.get");
    assert_eq!(get["bytes_out"], GIB);

    let peak = tg.peak_rss_kib();
    eprintln!("tollgate peak RSS after 2 GiB streamed: {peak} KiB");
    assert!(
        peak < PEAK_RSS_LIMIT_KIB,
        "peak RSS {peak} KiB while streaming 2 GiB"
    );
}
