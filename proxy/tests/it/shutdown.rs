use std::time::Duration;

use http::StatusCode;

use crate::support::Harness;

#[tokio::test]
async fn shutdown_lets_in_flight_requests_finish() {
    let mut h = Harness::start().await;
    let slow = {
        let client = h.client.clone();
        let uri = format!("http://{}/slow", h.addr);
        tokio::spawn(async move {
            let request = http::Request::get(uri)
                .header("host", "hello.localhost")
                .body(Default::default())
                .unwrap();
            client.request(request).await
        })
    };
    // Let the slow request reach the backend, then shut down.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let served = h.stop();
    let response = tokio::time::timeout(Duration::from_secs(5), slow)
        .await
        .expect("in-flight request did not finish")
        .unwrap()
        .expect("in-flight request failed");
    assert_eq!(response.status(), StatusCode::OK);
    tokio::time::timeout(Duration::from_secs(5), served)
        .await
        .expect("serve_http did not return")
        .unwrap()
        .unwrap();
    assert!(
        tokio::net::TcpStream::connect(h.addr).await.is_err(),
        "the listener is closed after shutdown"
    );
}
