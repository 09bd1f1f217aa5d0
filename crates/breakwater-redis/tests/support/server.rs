//! A `redis-server` of the test's own on a free loopback port, killed when dropped.
//!
//! Without the binary a test is skipped with a message, unless `BREAKWATER_REQUIRE_REDIS` is
//! set (CI sets it), when it fails.

#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

pub struct RedisServer {
    child: Child,
    pub port: u16,
}

impl RedisServer {
    /// Starts one on a free port; `None` (the test skips) if there is no `redis-server`.
    pub fn start() -> Option<RedisServer> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Self::start_on(port)
    }

    /// Starts one on `port` (to bring a killed server back where the replicas expect it).
    pub fn start_on(port: u16) -> Option<RedisServer> {
        let spawned = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) if std::env::var_os("BREAKWATER_REQUIRE_REDIS").is_some() => {
                panic!("redis-server is required (BREAKWATER_REQUIRE_REDIS) but did not start: {e}")
            }
            Err(e) => {
                eprintln!(
                    "skipped: no redis-server ({e}); install it, e.g. apt-get install redis-server"
                );
                return None;
            }
        };
        // Ready once it says so; its log goes on in a thread that drains the pipe.
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        loop {
            match lines.next() {
                Some(Ok(line)) if line.contains("Ready to accept connections") => break,
                Some(Ok(_)) => {}
                _ => panic!("redis-server on port {port} exited before it was ready"),
            }
        }
        std::thread::spawn(move || for _ in lines {});
        Some(RedisServer { child, port })
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Kills it at once (SIGKILL): connections drop, nothing is saved.
    pub fn kill(mut self) -> u16 {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.port
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
