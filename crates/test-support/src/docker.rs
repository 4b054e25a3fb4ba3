//! Asks whether a Docker engine answers, without a Docker client library.
//!
//! testcontainers would tell us too, but only by failing to start a container after its own
//! timeouts; one `GET /_ping` with a short deadline is quicker and gives a precise reason.

use std::{fmt, io, path::PathBuf, time::Duration};

use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::{TcpStream, UnixStream},
};

/// Where the Docker engine API is expected when `DOCKER_HOST` does not say otherwise.
const DEFAULT_SOCKET: &str = "/var/run/docker.sock";

/// A ping answer is a few hundred bytes; anything longer is not a Docker engine.
const MAX_RESPONSE_BYTES: u64 = 4096;

/// Where to reach the Docker engine API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Endpoint {
    Unix(PathBuf),
    /// `host:port`, plain HTTP.
    Tcp(String),
}

impl Endpoint {
    /// The endpoint `DOCKER_HOST` names when it is a `unix://` or `tcp://` address, else the
    /// default socket. Other schemes (`ssh://`, `npipe://`) would need a real client; on those
    /// machines the default socket is the best guess.
    pub(crate) fn from_docker_host(docker_host: Option<&str>) -> Self {
        if let Some(host) = docker_host {
            if let Some(path) = host.strip_prefix("unix://") {
                return Self::Unix(PathBuf::from(path));
            }
            if let Some(address) = host.strip_prefix("tcp://") {
                return Self::Tcp(address.trim_end_matches('/').to_owned());
            }
        }
        Self::Unix(PathBuf::from(DEFAULT_SOCKET))
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unix(path) => write!(f, "{}", path.display()),
            Self::Tcp(address) => write!(f, "tcp://{address}"),
        }
    }
}

/// Sends `GET /_ping` to `endpoint` and expects `200` with the body `OK`.
///
/// The error is a complete clause for the discovery message, e.g.
/// "no Docker engine answered at /var/run/docker.sock (No such file or directory (os error 2))".
pub(crate) async fn ping(endpoint: &Endpoint, timeout: Duration) -> Result<(), String> {
    let exchange = async {
        match endpoint {
            Endpoint::Unix(path) => exchange(UnixStream::connect(path).await?).await,
            Endpoint::Tcp(address) => exchange(TcpStream::connect(address).await?).await,
        }
    };
    let why = match tokio::time::timeout(timeout, exchange).await {
        Ok(Ok(response)) if is_pong(&response) => return Ok(()),
        Ok(Ok(_)) => "its answer to `GET /_ping` was not `200 OK` with body `OK`".to_owned(),
        Ok(Err(error)) => error.to_string(),
        Err(_elapsed) => format!("no answer within {timeout:?}"),
    };
    Err(format!("no Docker engine answered at {endpoint} ({why})"))
}

async fn exchange(mut stream: impl AsyncRead + AsyncWrite + Unpin) -> io::Result<Vec<u8>> {
    // HTTP/1.0 makes the engine close the connection after its answer: reading to the end yields
    // the whole response, with no keep-alive or chunked encoding to deal with.
    stream
        .write_all(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
        .await?;
    let mut response = Vec::new();
    stream
        .take(MAX_RESPONSE_BYTES)
        .read_to_end(&mut response)
        .await?;
    Ok(response)
}

/// Whether `response` is the engine's answer to a ping: status 200, body `OK`.
fn is_pong(response: &[u8]) -> bool {
    let Some(header_end) = response.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let (head, body) = (&response[..header_end], &response[header_end + 4..]);
    let status = head.split(|&b| b == b' ').nth(1).unwrap_or_default();
    head.starts_with(b"HTTP/1.") && status == b"200" && body == b"OK"
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use tokio::net::{TcpListener, UnixListener};

    use super::*;

    const PONG: &[u8] =
        b"HTTP/1.0 200 OK\r\nApi-Version: 1.47\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nOK";

    #[test]
    fn docker_host_chooses_the_endpoint() {
        assert_eq!(
            Endpoint::from_docker_host(Some("unix:///run/user/1000/docker.sock")),
            Endpoint::Unix(PathBuf::from("/run/user/1000/docker.sock"))
        );
        assert_eq!(
            Endpoint::from_docker_host(Some("tcp://10.0.0.5:2375/")),
            Endpoint::Tcp("10.0.0.5:2375".to_owned())
        );
        for unsupported in [None, Some("ssh://me@host"), Some("npipe:////./pipe/docker")] {
            assert_eq!(
                Endpoint::from_docker_host(unsupported),
                Endpoint::Unix(PathBuf::from(DEFAULT_SOCKET)),
                "{unsupported:?}"
            );
        }
    }

    #[test]
    fn only_a_200_with_body_ok_is_a_pong() {
        assert!(is_pong(PONG));
        assert!(!is_pong(
            b"HTTP/1.0 500 Internal Server Error\r\nContent-Length: 2\r\n\r\nOK"
        ));
        assert!(!is_pong(b"HTTP/1.0 200 OK\r\n\r\n{\"message\":\"hi\"}"));
        assert!(!is_pong(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n"));
        assert!(!is_pong(b"SSH-2.0-OpenSSH_9.2\r\n"));
    }

    /// Serves one connection: reads the request head, then writes `answer` and closes.
    async fn answer_once(
        mut stream: impl AsyncRead + AsyncWrite + Unpin,
        answer: &'static [u8],
    ) -> Vec<u8> {
        let mut request = Vec::new();
        let mut buf = [0; 256];
        while !request.ends_with(b"\r\n\r\n") {
            let n = stream.read(&mut buf).await.unwrap();
            assert_ne!(n, 0, "client closed before finishing its request");
            request.extend_from_slice(&buf[..n]);
        }
        stream.write_all(answer).await.unwrap();
        request
    }

    #[tokio::test]
    async fn ping_over_tcp_accepts_a_pong_and_rejects_anything_else() {
        for (answer, accepted) in [
            (PONG, true),
            (&b"HTTP/1.0 404 Not Found\r\n\r\n"[..], false),
        ] {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let endpoint = Endpoint::Tcp(listener.local_addr().unwrap().to_string());
            let server = tokio::spawn(async move {
                answer_once(listener.accept().await.unwrap().0, answer).await
            });

            let outcome = ping(&endpoint, Duration::from_secs(5)).await;

            assert_eq!(outcome.is_ok(), accepted, "{outcome:?}");
            let request = server.await.unwrap();
            assert!(request.starts_with(b"GET /_ping HTTP/1.0\r\n"));
        }
    }

    #[tokio::test]
    async fn ping_over_a_unix_socket() {
        let path = std::env::temp_dir().join(format!("docker-ping-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).unwrap();
        let server =
            tokio::spawn(
                async move { answer_once(listener.accept().await.unwrap().0, PONG).await },
            );

        let outcome = ping(&Endpoint::Unix(path.clone()), Duration::from_secs(5)).await;

        server.await.unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(outcome, Ok(()));
    }

    #[tokio::test]
    async fn ping_explains_why_nothing_answered() {
        let missing = Endpoint::Unix(Path::new("/nonexistent/docker.sock").to_path_buf());
        let error = ping(&missing, Duration::from_secs(5)).await.unwrap_err();
        assert!(
            error.starts_with("no Docker engine answered at /nonexistent/docker.sock ("),
            "{error}"
        );

        // Accepts the connection but never answers: the deadline decides.
        let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = Endpoint::Tcp(silent.local_addr().unwrap().to_string());
        let error = ping(&endpoint, Duration::from_millis(100))
            .await
            .unwrap_err();
        assert_eq!(
            error,
            format!("no Docker engine answered at {endpoint} (no answer within 100ms)")
        );
    }
}
