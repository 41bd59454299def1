//! A server on 127.0.0.1 port 0, UDP and TCP, and clients for it.

use std::net::SocketAddr;
use std::time::Duration;

use berth_dns::{DnsServer, EndpointRecord, PortRecord, Protocol, ServiceRecord, Zone};
use hickory_proto::op::{Edns, Message, Query};
use hickory_proto::rr::{Name, RData, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::timeout;

/// Longest any single network step of a test may take.
pub(crate) const STEP: Duration = Duration::from_secs(5);

pub(crate) struct TestServer {
    pub(crate) server: DnsServer,
    pub(crate) udp: SocketAddr,
    pub(crate) tcp: SocketAddr,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<std::io::Result<()>>>,
}

impl TestServer {
    pub(crate) async fn start(zone: Zone) -> Self {
        let server = DnsServer::new(zone).unwrap();
        let udp_socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let udp = udp_socket.local_addr().unwrap();
        let tcp = listener.local_addr().unwrap();
        let (stop, stopped) = watch::channel(false);
        let shutdown = |mut stopped: watch::Receiver<bool>| async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        };
        let tasks = vec![
            tokio::spawn({
                let server = server.clone();
                let shutdown = shutdown(stopped.clone());
                async move { server.serve_udp(udp_socket, shutdown).await }
            }),
            tokio::spawn({
                let server = server.clone();
                let shutdown = shutdown(stopped);
                async move { server.serve_tcp(listener, shutdown).await }
            }),
        ];
        Self {
            server,
            udp,
            tcp,
            stop,
            tasks,
        }
    }

    /// A server on the worker path ([`DnsServer::serve_listeners`]): `workers` SO_REUSEPORT
    /// UDP sockets with their threads, and TCP on the same port.
    pub(crate) async fn start_workers(zone: Zone, workers: usize) -> Self {
        let server = DnsServer::new(zone).unwrap();
        let listeners = DnsServer::bind(&["127.0.0.1:0".parse().unwrap()], workers).unwrap();
        let addr = listeners.local_addrs()[0];
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn({
            let server = server.clone();
            async move {
                let shutdown = async move {
                    let _ = stopped.wait_for(|stop| *stop).await;
                };
                server.serve_listeners(listeners, shutdown).await
            }
        });
        Self {
            server,
            udp: addr,
            tcp: addr,
            stop,
            tasks: vec![task],
        }
    }

    /// Stops both loops and checks they ended cleanly.
    pub(crate) async fn stop(self) {
        self.stop.send(true).unwrap();
        for task in self.tasks {
            timeout(STEP, task).await.unwrap().unwrap().unwrap();
        }
    }

    pub(crate) async fn udp(&self, name: &str, record_type: RecordType) -> Message {
        let response = udp_exchange(self.udp, &query(name, record_type, false)).await;
        Message::from_vec(&response).unwrap()
    }

    pub(crate) async fn tcp(&self, name: &str, record_type: RecordType) -> Message {
        let mut stream = TcpStream::connect(self.tcp).await.unwrap();
        tcp_send(&mut stream, &query(name, record_type, false)).await;
        Message::from_vec(&tcp_receive(&mut stream).await).unwrap()
    }
}

pub(crate) fn query(name: &str, record_type: RecordType, edns: bool) -> Vec<u8> {
    let mut message = Message::query();
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(Name::from_ascii(name).unwrap(), record_type));
    if edns {
        let mut e = Edns::new();
        e.set_max_payload(1232);
        message.set_edns(e);
    }
    message.to_vec().unwrap()
}

/// Sends one datagram and waits for the reply from the server.
pub(crate) async fn udp_exchange(server: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.connect(server).await.unwrap();
    socket.send(bytes).await.unwrap();
    let mut buf = vec![0; 65535];
    let len = timeout(STEP, socket.recv(&mut buf)).await.unwrap().unwrap();
    buf.truncate(len);
    buf
}

pub(crate) async fn tcp_send(stream: &mut TcpStream, bytes: &[u8]) {
    let len = u16::try_from(bytes.len()).unwrap().to_be_bytes();
    stream.write_all(&[&len[..], bytes].concat()).await.unwrap();
}

pub(crate) async fn tcp_receive(stream: &mut TcpStream) -> Vec<u8> {
    let len = timeout(STEP, stream.read_u16()).await.unwrap().unwrap();
    let mut buf = vec![0; usize::from(len)];
    timeout(STEP, stream.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    buf
}

fn port(name: &str, port: u16) -> PortRecord {
    PortRecord {
        name: name.into(),
        protocol: Protocol::Tcp,
        port,
    }
}

/// `hello` in `default`, headless, three endpoints on 127.0.0.1 serving http on 31001..31003
/// with host names hello-a, hello-b, hello-c.
pub(crate) fn hello_zone() -> Zone {
    Zone {
        services: vec![ServiceRecord {
            name: "hello".into(),
            namespace: "default".into(),
            vip: None,
            ports: vec![port("http", 80)],
            endpoints: ["a", "b", "c"]
                .iter()
                .zip(31001..)
                .map(|(host, p)| EndpointRecord {
                    hostname: format!("hello-{host}"),
                    address: "127.0.0.1".parse().unwrap(),
                    ports: vec![port("http", p)],
                })
                .collect(),
        }],
        ..Zone::default()
    }
}

/// A headless service `name` in `default` whose endpoint `i` is `<name>-<i>` at
/// `10.0.<third>.<i + 1>` serving http on 8080.
pub(crate) fn service(name: &str, endpoints: u8, third: u8) -> ServiceRecord {
    ServiceRecord {
        name: name.into(),
        namespace: "default".into(),
        vip: None,
        ports: vec![],
        endpoints: (0..endpoints)
            .map(|i| EndpointRecord {
                hostname: format!("{name}-{i}"),
                address: format!("10.0.{third}.{}", i + 1).parse().unwrap(),
                ports: vec![port("http", 8080)],
            })
            .collect(),
    }
}

pub(crate) fn addresses(message: &Message) -> Vec<std::net::IpAddr> {
    message
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0.into()),
            RData::AAAA(a) => Some(a.0.into()),
            _ => None,
        })
        .collect()
}
