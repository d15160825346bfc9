//! Baselines measured in the same run as the gateways, on the same machine: the
//! file system's write+fsync rate (what a durable store is bounded by) and a raw
//! tokio-rustls TLS 1.3 echo over loopback (what the transport alone does).

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use crate::error::{Error, Result};
use crate::stats::summary_ms;

/// Rate of 1 KiB write + fsync appended to one file in `dir`, per second.
pub async fn fsync_rate(dir: &Path, seconds: f64) -> Result<f64> {
    let path = dir.join(format!("fsync-probe-{}", std::process::id()));
    tokio::task::spawn_blocking(move || -> Result<f64> {
        use std::io::Write;
        let mut f = std::fs::File::create(&path)?;
        let block = [0x66u8; 1024];
        let start = Instant::now();
        let mut n = 0u64;
        while start.elapsed().as_secs_f64() < seconds {
            f.write_all(&block)?;
            f.sync_all()?;
            n += 1;
        }
        let rate = n as f64 / start.elapsed().as_secs_f64();
        drop(f);
        let _ = std::fs::remove_file(&path);
        Ok(rate)
    })
    .await?
}

/// Accepts any server certificate (the baseline measures the transport, not PKI).
#[derive(Debug)]
struct AnyServer(rustls::crypto::WebPkiSupportedAlgorithms);

impl rustls::client::danger::ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> std::result::Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 not used".into()))
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// A loopback TLS 1.3 echo server (ECDSA P-256, ring) and a connected client.
async fn echo_pair() -> Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let cert =
        rcgen::CertificateParams::new(vec!["echo.invalid".to_string()])?.self_signed(&key)?;
    let server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )?;
    let client = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer(
            provider.signature_verification_algorithms,
        )))
        .with_no_client_auth();
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    tokio::spawn(async move {
        let Ok((tcp, _)) = listener.accept().await else {
            return;
        };
        let _ = tcp.set_nodelay(true);
        let Ok(tls) = acceptor.accept(tcp).await else {
            return;
        };
        let (mut r, mut w) = tokio::io::split(tls);
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if w.write_all(&buf[..n]).await.is_err() || w.flush().await.is_err() {
                        break;
                    }
                }
            }
        }
        let _ = w.shutdown().await;
    });
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let name = rustls::pki_types::ServerName::try_from("echo.invalid")?;
    Ok(tokio_rustls::TlsConnector::from(Arc::new(client))
        .connect(name, tcp)
        .await?)
}

/// Pipelined echo of `count` length-prefixed messages: messages/s.
pub async fn echo_throughput(size: usize, count: usize) -> Result<f64> {
    let tls = echo_pair().await?;
    let (mut r, w) = tokio::io::split(tls);
    let mut msg = (size as u32).to_be_bytes().to_vec();
    msg.extend(std::iter::repeat_n(0x5au8, size));
    let start = Instant::now();
    let writer = tokio::spawn(async move {
        let mut w = tokio::io::BufWriter::with_capacity(256 * 1024, w);
        for _ in 0..count {
            w.write_all(&msg).await?;
        }
        w.flush().await?;
        Ok::<_, std::io::Error>(w)
    });
    let mut body = vec![0u8; size];
    let mut r2 = BufReader::with_capacity(256 * 1024, &mut r);
    for _ in 0..count {
        let mut len = [0u8; 4];
        r2.read_exact(&mut len).await?;
        let n = u32::from_be_bytes(len) as usize;
        if n != size {
            return Err(Error::EchoFraming);
        }
        r2.read_exact(&mut body).await?;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let mut w = writer.await??.into_inner();
    let _ = w.shutdown().await;
    Ok(count as f64 / elapsed)
}

/// Sequential echo round trips: latency summary.
pub async fn echo_rtt(size: usize, count: usize) -> Result<Value> {
    let mut tls = echo_pair().await?;
    let mut msg = (size as u32).to_be_bytes().to_vec();
    msg.extend(std::iter::repeat_n(0x5au8, size));
    let mut back = vec![0u8; size + 4];
    let mut samples = Vec::with_capacity(count);
    for _ in 0..count {
        let t = Instant::now();
        tls.write_all(&msg).await?;
        tls.flush().await?;
        tls.read_exact(&mut back).await?;
        samples.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let _ = tls.shutdown().await;
    Ok(summary_ms(samples))
}
