//! TLS that encrypts without verifying the server's certificate: libpq's `sslmode=prefer`
//! and `sslmode=require` when no root certificate is given, the default setup.
//!
//! Built on a bare OpenSSL client context rather than `native-tls`, because `native-tls`
//! loads the operating system's whole trust store into every connector it builds (about
//! 150 ms on a Debian machine), and this mode never looks at it: a command that reads one
//! tenant's status would spend most of its time there. The modes that verify a chain
//! (`verify-ca`, `verify-full`, a root certificate) keep using `native-tls`, see
//! [`crate::pg::db`].
//!
//! Like libpq, the server name is sent (SNI) when the host is a name, not an address, and
//! the `tls-server-end-point` channel binding is offered to SCRAM authentication.
//!
//! A client certificate (libpq's `sslcert`, `sslkey`, `sslpassword`) is loaded once by
//! [`ClientCert::load`], with libpq's rule for the key file's permissions, and presented
//! by either kind of session when the server asks for one.

use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};

use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::ssl::{Ssl, SslContext, SslMethod, SslRef, SslVerifyMode};
use openssl::x509::X509;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_openssl::SslStream;
use tokio_postgres::tls::{self, ChannelBinding, MakeTlsConnect, TlsConnect};

/// Makes encrypted, unverified TLS sessions; cheap to clone (the context is shared).
#[derive(Clone)]
pub struct Encrypting {
    context: SslContext,
}

impl Encrypting {
    /// A client context that accepts any certificate (no trust store is loaded) and
    /// presents `client`'s certificate when the server asks for one.
    pub fn new(client: Option<&ClientCert>) -> Result<Encrypting, String> {
        let mut builder =
            SslContext::builder(SslMethod::tls_client()).map_err(|e| e.to_string())?;
        builder.set_verify(SslVerifyMode::NONE);
        if let Some(client) = client {
            let (leaf, rest) = client.chain.split_first().ok_or("empty sslcert")?;
            builder.set_certificate(leaf).map_err(|e| e.to_string())?;
            for cert in rest {
                builder
                    .add_extra_chain_cert(cert.clone())
                    .map_err(|e| e.to_string())?;
            }
            // ClientCert::load checked that the key is the certificate's.
            builder
                .set_private_key(&client.key)
                .map_err(|e| e.to_string())?;
        }
        Ok(Encrypting {
            context: builder.build(),
        })
    }
}

impl<S> MakeTlsConnect<S> for Encrypting
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = Stream<S>;
    type TlsConnect = Handshake;
    type Error = openssl::error::ErrorStack;

    fn make_tls_connect(&mut self, host: &str) -> Result<Handshake, Self::Error> {
        let mut ssl = Ssl::new(&self.context)?;
        if !host.is_empty() && host.parse::<IpAddr>().is_err() {
            ssl.set_hostname(host)?;
        }
        Ok(Handshake { ssl })
    }
}

/// One connection's TLS handshake, ready to run over the socket.
pub struct Handshake {
    ssl: Ssl,
}

type Failure = Box<dyn std::error::Error + Send + Sync>;

impl<S> TlsConnect<S> for Handshake
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = Stream<S>;
    type Error = Failure;
    type Future = Pin<Box<dyn Future<Output = Result<Stream<S>, Failure>> + Send>>;

    fn connect(self, socket: S) -> Self::Future {
        Box::pin(async move {
            let mut stream = SslStream::new(self.ssl, socket)?;
            Pin::new(&mut stream).connect().await?;
            Ok(Stream(stream))
        })
    }
}

/// An established TLS session over `S`.
pub struct Stream<S>(SslStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Stream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Stream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> tls::TlsStream for Stream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        match server_end_point(self.0.ssl()) {
            Some(hash) => ChannelBinding::tls_server_end_point(hash),
            None => ChannelBinding::none(),
        }
    }
}

/// RFC 5929's `tls-server-end-point`: the server certificate hashed with its signature's
/// hash function, SHA-256 in place of MD5 and SHA-1. `None` when the certificate's
/// signature names no hash function (Ed25519): such a session offers no binding.
fn server_end_point(ssl: &SslRef) -> Option<Vec<u8>> {
    let cert = ssl.peer_certificate()?;
    let signed_with = cert
        .signature_algorithm()
        .object()
        .nid()
        .signature_algorithms()?;
    let digest = match signed_with.digest {
        Nid::MD5 | Nid::SHA1 => MessageDigest::sha256(),
        other => MessageDigest::from_nid(other)?,
    };
    cert.digest(digest).ok().map(|d| d.to_vec())
}

/// A client certificate with its private key: libpq's `sslcert` and `sslkey` (the key
/// decrypted with `sslpassword` when it is encrypted).
#[derive(Clone)]
pub struct ClientCert {
    /// The certificate first, then any intermediates the file holds.
    chain: Vec<X509>,
    key: PKey<Private>,
    /// The certificate's file, for messages.
    pub cert_file: String,
}

impl ClientCert {
    /// Reads the certificate file and the key file. As libpq, a key file that is not a
    /// regular file, or that its owner lets the group or others read (the group may read
    /// it when root owns it), is refused; an encrypted key needs `password`.
    pub fn load(cert: &Path, key: &Path, password: Option<&str>) -> Result<ClientCert, String> {
        let cert_file = cert.display().to_string();
        let key_file = key.display().to_string();
        let pem = std::fs::read(cert)
            .map_err(|e| format!("cannot read the client certificate sslcert {cert_file}: {e}"))?;
        let chain = X509::stack_from_pem(&pem).map_err(|_| {
            format!("the client certificate sslcert {cert_file} is not a PEM certificate")
        })?;
        if chain.is_empty() {
            return Err(format!(
                "the client certificate sslcert {cert_file} holds no certificate"
            ));
        }
        check_key_permissions(key, &key_file)?;
        let key_pem = std::fs::read(key)
            .map_err(|e| format!("cannot read the private key sslkey {key_file}: {e}"))?;
        let encrypted = String::from_utf8_lossy(&key_pem).contains("ENCRYPTED");
        let key = match password {
            Some(pw) => PKey::private_key_from_pem_passphrase(&key_pem, pw.as_bytes()),
            None if encrypted => {
                return Err(format!(
                    "the private key sslkey {key_file} is encrypted: give its passphrase as \
                     sslpassword in the connection string (tenantctl never prompts)"
                ))
            }
            None => PKey::private_key_from_pem(&key_pem),
        }
        .map_err(|_| match password {
            Some(_) if encrypted => format!(
                "the private key sslkey {key_file} cannot be decrypted with the sslpassword given"
            ),
            _ => format!("the private key sslkey {key_file} is not a PEM private key"),
        })?;
        // Checked here, whichever TLS path presents it, so a mismatch is named rather
        // than left to a handshake error.
        let matches = chain[0]
            .public_key()
            .map(|public| public.public_eq(&key))
            .unwrap_or(false);
        if !matches {
            return Err(format!(
                "the private key sslkey {key_file} does not belong to the client certificate {cert_file}"
            ));
        }
        Ok(ClientCert {
            chain,
            key,
            cert_file,
        })
    }

    /// The certificate and key for `native-tls` (PEM, the key as PKCS#8).
    pub fn identity(&self) -> Result<native_tls::Identity, String> {
        let mut certs = Vec::new();
        for cert in &self.chain {
            certs.extend(cert.to_pem().map_err(|e| e.to_string())?);
        }
        let key = self
            .key
            .private_key_to_pem_pkcs8()
            .map_err(|e| e.to_string())?;
        native_tls::Identity::from_pkcs8(&certs, &key).map_err(|e| e.to_string())
    }
}

/// libpq's rule for a private key file: a regular file the group and others cannot
/// read (when root owns it, the group may read it).
fn check_key_permissions(key: &Path, shown: &str) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(key)
        .map_err(|e| format!("cannot read the private key sslkey {shown}: {e}"))?;
    if !meta.is_file() {
        return Err(format!(
            "the private key sslkey {shown} is not a regular file"
        ));
    }
    let mode = meta.mode();
    let too_open = if meta.uid() == 0 {
        mode & 0o037 != 0
    } else {
        mode & 0o077 != 0
    };
    if too_open {
        return Err(format!(
            "the private key sslkey {shown} has group or world access (mode {:04o}); it must \
             be u=rw (0600) or less when owned by the current user, or u=rw,g=r (0640) or \
             less when owned by root, as libpq requires: chmod 600 {shown}",
            mode & 0o7777
        ));
    }
    Ok(())
}

/// How TLS sessions are made.
#[derive(Clone)]
pub enum Tls {
    /// Checking the server's certificate chain (and maybe its name): `native-tls`, whose
    /// connector loads the system's trust store, which costs about 150 ms.
    Verifying(postgres_native_tls::MakeTlsConnector),
    /// Encrypting only, as libpq's `prefer` and `require` without a root certificate:
    /// no trust store is loaded (see [`Encrypting`]).
    Encrypting(Encrypting),
}
