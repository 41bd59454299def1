//! Instance logs: stdout and stderr through pipes into a size-capped file per instance (one
//! rotated generation kept), served over HTTP to the API server, which proxies `berth logs`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::http_util::{Body, respond, serve};

/// A log file grows to this size, then becomes `<name>.log.1` and a new one starts.
pub(crate) const MAX_LOG_BYTES: u64 = 10 << 20;

/// The log file of an instance.
pub(crate) fn log_path(dir: &Path, namespace: &str, name: &str) -> PathBuf {
    dir.join(format!("{namespace}_{name}.log"))
}

/// One instance's log file, shared by its stdout and stderr copiers.
pub(crate) struct LogFile {
    path: PathBuf,
    file: tokio::fs::File,
    size: u64,
    cap: u64,
}

impl LogFile {
    /// Opens (appends to) the log file.
    pub(crate) async fn open(path: PathBuf, cap: u64) -> std::io::Result<LogFile> {
        let file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .await?;
        let size = file.metadata().await?.len();
        Ok(LogFile {
            path,
            file,
            size,
            cap,
        })
    }

    async fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        if self.size + data.len() as u64 > self.cap {
            self.file.flush().await?;
            let old = self.path.with_extension("log.1");
            tokio::fs::rename(&self.path, &old).await?;
            self.file = tokio::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .await?;
            self.size = 0;
        }
        self.file.write_all(data).await?;
        self.size += data.len() as u64;
        Ok(())
    }
}

/// Opens a log file for appending, to be given to an instance as its stdout and stderr.
pub(crate) fn open_append(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
}

/// Keeps a log file that an instance writes itself (O_APPEND) under `cap`: when it grew past
/// it, its content moves to `.log.1` and the file is truncated (logrotate's copytruncate; what
/// the instance writes between the copy and the truncation is lost). Runs until `stop`.
pub(crate) async fn cap_file(path: PathBuf, cap: u64, stop: tokio_util::sync::CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
        }
        let Ok(meta) = tokio::fs::metadata(&path).await else {
            continue;
        };
        if meta.len() <= cap {
            continue;
        }
        let old = path.with_extension("log.1");
        let rotated = async {
            tokio::fs::copy(&path, &old).await?;
            std::fs::OpenOptions::new()
                .write(true)
                .open(&path)?
                .set_len(0)
        };
        if let Err(e) = rotated.await {
            tracing::warn!(path = %path.display(), error = %e, "rotating an instance log");
        }
    }
}

/// Copies a child's output into the log until the pipe closes.
pub(crate) async fn copy(mut from: impl AsyncRead + Unpin, log: Arc<Mutex<LogFile>>) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if let Err(e) = log.lock().await.write(&buf[..n]).await {
                    tracing::warn!(error = %e, "writing an instance log");
                }
            }
        }
    }
}

/// The last `tail` lines of a file (all of it when `None`), reading at most the last 1 MiB per
/// requested line budget so that a huge log is not read whole.
async fn read_tail(path: &Path, tail: Option<usize>) -> std::io::Result<(Vec<u8>, u64)> {
    let mut f = tokio::fs::File::open(path).await?;
    let len = f.metadata().await?.len();
    let start = match tail {
        Some(n) => len.saturating_sub((n as u64 + 1).saturating_mul(4096).min(MAX_LOG_BYTES)),
        None => 0,
    };
    f.seek(std::io::SeekFrom::Start(start)).await?;
    let mut data = Vec::new();
    f.read_to_end(&mut data).await?;
    if let Some(n) = tail {
        let ends: Vec<usize> = data
            .iter()
            .enumerate()
            .filter(|(_, b)| **b == b'\n')
            .map(|(i, _)| i)
            .collect();
        let trailing = usize::from(data.last() != Some(&b'\n'));
        let keep_lines = n.saturating_sub(trailing);
        if ends.len() > keep_lines {
            let cut = ends[ends.len() - keep_lines - 1] + 1;
            data.drain(..cut);
        }
    }
    Ok((data, len))
}

fn query_value<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
}

/// Serves `GET /logs/{namespace}/{name}?tail=N&follow=1` to holders of `token` until
/// `shutdown`.
pub(crate) async fn serve_logs(
    listener: tokio::net::TcpListener,
    dir: PathBuf,
    token: Option<String>,
    shutdown: CancellationToken,
) {
    let expected = token.map(|t| format!("Bearer {t}"));
    let stop = shutdown.clone();
    serve(
        listener,
        move |req| {
            let dir = dir.clone();
            let expected = expected.clone();
            let stop = stop.clone();
            async move {
                let authorized = match &expected {
                    Some(e) => {
                        req.headers()
                            .get(http::header::AUTHORIZATION)
                            .and_then(|v| v.to_str().ok())
                            == Some(e.as_str())
                    }
                    None => true,
                };
                if !authorized {
                    return respond(
                        StatusCode::UNAUTHORIZED,
                        "text/plain",
                        "this node's token is needed\n",
                    );
                }
                let path = req.uri().path().to_owned();
                let query = req.uri().query().unwrap_or("").to_owned();
                let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
                let (ns, name) = match parts.as_slice() {
                    // Names are DNS labels: nothing here can climb out of the log directory.
                    ["logs", ns, name]
                        if crate::api::is_dns_label(ns) && crate::api::is_dns_label(name) =>
                    {
                        (*ns, *name)
                    }
                    _ => {
                        return respond(
                            StatusCode::NOT_FOUND,
                            "text/plain",
                            "GET /logs/{namespace}/{name}\n",
                        );
                    }
                };
                let file = log_path(&dir, ns, name);
                let tail = query_value(&query, "tail").and_then(|t| t.parse().ok());
                let (data, offset) = match read_tail(&file, tail).await {
                    Ok(d) => d,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        return respond(
                            StatusCode::NOT_FOUND,
                            "text/plain",
                            format!("no log for {ns}/{name} on this node\n"),
                        );
                    }
                    Err(e) => {
                        return respond(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            "text/plain",
                            format!("reading the log: {e}\n"),
                        );
                    }
                };
                if query_value(&query, "follow") != Some("1") {
                    return respond(StatusCode::OK, "text/plain", data);
                }
                follow(file, data, offset, stop)
            }
        },
        shutdown,
        Duration::from_secs(1),
    )
    .await;
}

/// Streams what is there, then what gets appended, polling the file every 200 ms.
fn follow(
    file: PathBuf,
    first: Vec<u8>,
    mut offset: u64,
    stop: CancellationToken,
) -> hyper::Response<Body> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    tokio::spawn(async move {
        if tx.send(Bytes::from(first)).await.is_err() {
            return;
        }
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tx.closed() => return,
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
            let Ok(mut f) = tokio::fs::File::open(&file).await else {
                continue;
            };
            let Ok(len) = f.metadata().await.map(|m| m.len()) else {
                continue;
            };
            if len < offset {
                // Rotated: start over on the new file.
                offset = 0;
            }
            if len == offset || f.seek(std::io::SeekFrom::Start(offset)).await.is_err() {
                continue;
            }
            let mut data = Vec::new();
            if f.read_to_end(&mut data).await.is_ok() && !data.is_empty() {
                offset += data.len() as u64;
                if tx.send(Bytes::from(data)).await.is_err() {
                    return;
                }
            }
        }
    });
    crate::http_util::channel_response(rx, "text/plain; charset=utf-8")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn rotates_at_the_cap_and_tails_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_path(dir.path(), "default", "a");
        let mut log = LogFile::open(path.clone(), 100).await.unwrap();
        for i in 0..30 {
            log.write(format!("line {i}\n").as_bytes()).await.unwrap();
        }
        log.file.flush().await.unwrap();
        let current = std::fs::read_to_string(&path).unwrap();
        let rotated = std::fs::read_to_string(path.with_extension("log.1")).unwrap();
        assert!(current.len() <= 100 && rotated.len() <= 100);
        assert!(current.ends_with("line 29\n"));
        let (tail, _) = read_tail(&path, Some(2)).await.unwrap();
        assert_eq!(String::from_utf8(tail).unwrap(), "line 28\nline 29\n");
    }
}
