//! A minimal instance metadata service (IMDSv2) on a loopback port: the
//! token PUT, then GETs that need the token. Enough for autosnap to learn
//! "its" instance id and region in tests.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::Arc;

const TOKEN: &str = "test-imds-token";

pub struct FakeImds {
    pub port: u16,
}

impl FakeImds {
    pub fn start(instance_id: &str, region: &str) -> FakeImds {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let mut paths: HashMap<String, String> = HashMap::new();
        paths.insert("/latest/meta-data/instance-id".into(), instance_id.into());
        paths.insert("/latest/meta-data/placement/region".into(), region.into());
        paths.insert(
            "/latest/meta-data/placement/availability-zone".into(),
            format!("{region}a"),
        );
        paths.insert(
            "/latest/meta-data/block-device-mapping/".into(),
            "root\nebs1".into(),
        );
        paths.insert(
            "/latest/meta-data/block-device-mapping/root".into(),
            "/dev/sda1".into(),
        );
        paths.insert(
            "/latest/meta-data/block-device-mapping/ebs1".into(),
            "sdf".into(),
        );
        let paths = Arc::new(paths);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let paths = paths.clone();
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                    let mut request_line = String::new();
                    if reader.read_line(&mut request_line).is_err() {
                        return;
                    }
                    let mut headers = HashMap::new();
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                            break;
                        }
                        if let Some((k, v)) = line.split_once(':') {
                            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
                        }
                    }
                    let len: usize = headers
                        .get("content-length")
                        .and_then(|l| l.parse().ok())
                        .unwrap_or(0);
                    let mut body = vec![0; len];
                    let _ = reader.read_exact(&mut body);
                    let mut parts = request_line.split_whitespace();
                    let method = parts.next().unwrap_or("");
                    let path = parts.next().unwrap_or("");
                    let (status, text, extra) = if method == "PUT" && path == "/latest/api/token" {
                        (
                            "200 OK",
                            TOKEN.to_string(),
                            "x-aws-ec2-metadata-token-ttl-seconds: 21600\r\n",
                        )
                    } else if headers.get("x-aws-ec2-metadata-token").map(String::as_str)
                        != Some(TOKEN)
                    {
                        ("401 Unauthorized", String::new(), "")
                    } else if let Some(v) = paths.get(path) {
                        ("200 OK", v.clone(), "")
                    } else {
                        ("404 Not Found", String::new(), "")
                    };
                    let _ = write!(
                        stream,
                        "HTTP/1.1 {status}\r\ncontent-type: text/plain\r\n{extra}content-length: {}\r\nconnection: close\r\n\r\n{text}",
                        text.len()
                    );
                });
            }
        });
        FakeImds { port }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}
