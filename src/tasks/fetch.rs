//! Getting a task's binary: inline base64, registry chunks through the proxy, or HTTP(S)
//! (docs/protocol.md §5.9).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use futures::StreamExt;
use tokio::sync::oneshot;
use tracing::{debug, warn};

use super::chunks::{Assembler, ChunkError};
use super::inline::Decoded;
use crate::config::FetchSettings;
use crate::protocol::{BinaryRequest, Chunk, ErrorKind, KnownTexts, Outbound, StartRequest};
use crate::runtime::{Binary, Digest};
use crate::sandbox::{Policy, Source};
use crate::transport::Publisher;

/// Why a binary could not be obtained.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// `file` is not valid standard base64.
    #[error("file is not valid base64: {0}")]
    Base64(#[from] base64::DecodeError),
    /// Larger than `PROPLET_MAX_BINARY_SIZE`.
    #[error("the binary is larger than the limit of {0} bytes")]
    TooLarge(u64),
    /// No chunks arrived in time.
    #[error("Timeout waiting for binary chunks of {app_name} after {waited:?}")]
    ChunkTimeout {
        /// The requested reference.
        app_name: String,
        /// How long we waited.
        waited: Duration,
    },
    /// The registry transfer failed.
    #[error("registry transfer failed: {0}")]
    Chunks(#[from] ChunkError),
    /// The HTTP download failed.
    #[error("HTTP fetch of {url} failed: {reason}")]
    Http {
        /// The URL.
        url: String,
        /// Why, with the cause chain.
        reason: String,
    },
    /// The HTTP client could not be set up.
    #[error("cannot set up the HTTP client: {0}")]
    Client(String),
    /// The request to the registry proxy could not be queued.
    #[error("cannot request the binary from the registry: the MQTT session is closed")]
    Closed,
}

impl FetchError {
    /// The error for logs: URLs without credentials or query.
    pub fn log_text(&self) -> String {
        match self {
            FetchError::Http { url, reason } => {
                let shown = redact_url(url);
                format!(
                    "HTTP fetch of {shown} failed: {}",
                    reason.replace(url.as_str(), &shown)
                )
            }
            other => other.to_string(),
        }
    }

    /// The wire classification.
    pub fn kind(&self) -> ErrorKind {
        match self {
            FetchError::Base64(_) => ErrorKind::Invalid,
            FetchError::TooLarge(_) => ErrorKind::Denied,
            _ => ErrorKind::Fetch,
        }
    }
}

/// The download URL of a start without an inline binary whose `image_url` is HTTP(S);
/// `None` for a registry reference.
pub fn http_url(req: &StartRequest) -> Result<Option<url::Url>, FetchError> {
    let text = req.image_url.as_str();
    if !req.file.is_empty() || !(text.starts_with("http://") || text.starts_with("https://")) {
        return Ok(None);
    }
    url::Url::parse(text)
        .map(Some)
        .map_err(|e| FetchError::Http {
            url: text.to_owned(),
            reason: format!("not a valid URL: {e}"),
        })
}

/// Obtains binaries from all three sources.
pub struct Fetcher {
    registry: Registry,
    /// Built on the first download.
    http: tokio::sync::OnceCell<reqwest::Client>,
    http_timeout: Duration,
    /// Where downloads may be redirected to.
    policy: Policy,
    max_bytes: u64,
    /// Binaries in use, so that many tasks with one digest share one copy.
    shared: Mutex<HashMap<Digest, Weak<[u8]>>>,
    /// Inline binaries decoded lately, by their base64 text (shared with the decoder).
    decoded: Arc<Decoded>,
}

impl Fetcher {
    /// A fetcher that asks the registry proxy through `publisher` and follows a download's
    /// redirects only where `policy` allows downloads from. Its HTTP client is built on the
    /// first download: a worker that never downloads never holds one (about 1 MB resident).
    pub fn new(settings: &FetchSettings, publisher: Publisher, policy: Policy) -> Self {
        Fetcher {
            registry: Registry::new(settings, publisher),
            http: tokio::sync::OnceCell::new(),
            http_timeout: settings.http_timeout,
            policy,
            max_bytes: settings.max_binary_bytes,
            shared: Mutex::new(HashMap::new()),
            decoded: Arc::default(),
        }
    }

    /// The HTTP client for downloads, built on first use.
    async fn client(&self) -> Result<&reqwest::Client, FetchError> {
        self.http
            .get_or_try_init(|| async {
                let policy = self.policy.clone();
                let redirects = reqwest::redirect::Policy::custom(move |attempt| {
                    match check_redirect(&policy, attempt.previous(), attempt.url()) {
                        Ok(()) => attempt.follow(),
                        Err(why) => attempt.error(why),
                    }
                });
                crate::crypto::install_default();
                reqwest::Client::builder()
                    .timeout(self.http_timeout)
                    .redirect(redirects)
                    .build()
                    .map_err(|e| FetchError::Client(error_chain(&e)))
            })
            .await
    }

    /// The binary of a start request: one copy in memory however many waiting or running
    /// tasks use the same bytes.
    pub async fn fetch(&self, req: &StartRequest) -> Result<Binary, FetchError> {
        let binary = if !req.file.is_empty() {
            self.inline(req.file.shared())?
        } else {
            match http_url(req)? {
                Some(url) => self.http(url.as_str()).await?,
                None => self.registry.fetch(&req.image_url).await?,
            }
        };
        Ok(self.share(binary))
    }

    /// `binary`, or the copy already in use with the same digest.
    fn share(&self, binary: Binary) -> Binary {
        // Entries are inserted and removed whole; a poisoned map is still consistent.
        let mut shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(bytes) = shared.get(&binary.digest).and_then(Weak::upgrade) {
            return Binary {
                bytes,
                digest: binary.digest,
            };
        }
        if shared.len() >= SHARED_SWEEP {
            shared.retain(|_, bytes| bytes.strong_count() > 0);
        }
        shared.insert(binary.digest.clone(), Arc::downgrade(&binary.bytes));
        binary
    }

    /// The inline texts this fetcher remembers, for the MQTT session's decoder to share
    /// ([`crate::protocol::decode_sharing`]).
    pub fn known_texts(&self) -> Arc<dyn KnownTexts> {
        self.decoded.clone()
    }

    /// Feeds a chunk from `registry/server`.
    pub fn on_chunk(&self, chunk: Chunk) {
        self.registry.on_chunk(chunk);
    }

    fn inline(&self, file: &Arc<[u8]>) -> Result<Binary, FetchError> {
        if (file.len() as u64 / 4) * 3 > self.max_bytes {
            return Err(FetchError::TooLarge(self.max_bytes));
        }
        if let Some(binary) = self.decoded.get(file) {
            return Ok(binary);
        }
        let binary = Binary::new(STANDARD.decode(&**file)?);
        self.decoded.remember(file, &binary);
        Ok(binary)
    }

    async fn http(&self, url: &str) -> Result<Binary, FetchError> {
        let fail = |reason: String| FetchError::Http {
            url: url.to_owned(),
            reason,
        };
        let resp = self
            .client()
            .await?
            .get(url)
            .send()
            .await
            .map_err(|e| fail(error_chain(&e.without_url())))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(fail(format!("status {status}")));
        }
        let content_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let mime = content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if !mime.is_empty() && mime != "application/wasm" && mime != "application/octet-stream" {
            return Err(fail(format!("unexpected content type {content_type:?}")));
        }
        if resp.content_length().is_some_and(|n| n > self.max_bytes) {
            return Err(FetchError::TooLarge(self.max_bytes));
        }
        let mut body = Vec::new();
        let mut stream = resp.bytes_stream();
        while let Some(piece) = stream.next().await {
            body.extend_from_slice(&piece.map_err(|e| fail(error_chain(&e.without_url())))?);
            if body.len() as u64 > self.max_bytes {
                return Err(FetchError::TooLarge(self.max_bytes));
            }
        }
        Ok(Binary::new(body))
    }
}

/// Size of the shared-binary map at which entries no longer in use are swept out.
const SHARED_SWEEP: usize = 1024;

/// Most redirects one download follows.
const MAX_REDIRECTS: usize = 5;

/// Whether a download may follow a redirect from the URLs in `previous` to `next`: every
/// hop must be an allowed source, never a step down from `https` to `http`, and the chain
/// is short.
fn check_redirect(policy: &Policy, previous: &[url::Url], next: &url::Url) -> Result<(), String> {
    if previous.len() > MAX_REDIRECTS {
        return Err(format!("more than {MAX_REDIRECTS} redirects"));
    }
    let downgrade = previous.iter().any(|u| u.scheme() == "https") && next.scheme() != "https";
    if downgrade {
        return Err(format!(
            "refused a redirect from https to {}",
            redact_url(next.as_str())
        ));
    }
    if !matches!(next.scheme(), "http" | "https") {
        return Err(format!("refused a redirect to a {} URL", next.scheme()));
    }
    policy
        .check_source(Source::Http(next))
        .map_err(|e| format!("refused a redirect: {e}"))
}

/// `url` without user info, query or fragment (they may carry secrets).
fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            // Both setters only fail for URLs that cannot have credentials.
            u.set_username("").ok();
            u.set_password(None).ok();
            u.set_query(None);
            u.set_fragment(None);
            u.to_string()
        }
        Err(_) => "<unparsable URL>".into(),
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

type Waiter = oneshot::Sender<Result<Arc<[u8]>, ChunkError>>;

/// Registry transfers: who waits for which `app_name`, and the assemblies in progress.
struct Registry {
    state: Mutex<RegistryState>,
    publisher: Publisher,
    timeout: Duration,
    next_waiter: AtomicU64,
}

struct RegistryState {
    assembler: Assembler,
    waiters: HashMap<String, Vec<(u64, Waiter)>>,
}

impl Registry {
    fn new(settings: &FetchSettings, publisher: Publisher) -> Self {
        let assembler = Assembler::new(settings.max_binary_bytes, settings.max_assemblies);
        Registry {
            state: Mutex::new(RegistryState {
                assembler,
                waiters: HashMap::new(),
            }),
            publisher,
            timeout: settings.chunk_timeout,
            next_waiter: AtomicU64::new(0),
        }
    }

    /// Requests `app_name` from the proxy (once per concurrent transfer) and waits for it.
    async fn fetch(&self, app_name: &str) -> Result<Binary, FetchError> {
        let id = self.next_waiter.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        let first = {
            let mut st = self.lock();
            st.assembler.expect(app_name)?;
            let list = st.waiters.entry(app_name.to_owned()).or_default();
            list.push((id, tx));
            list.len() == 1
        };
        let _waiting = WaiterGuard {
            registry: self,
            app_name,
            id,
        };
        if first {
            let req = Outbound::BinaryRequest(BinaryRequest {
                app_name: app_name.to_owned(),
            });
            self.publisher
                .send(req)
                .await
                .map_err(|_| FetchError::Closed)?;
        }
        match tokio::time::timeout(self.timeout, rx).await {
            Ok(Ok(Ok(bytes))) => Ok(Binary::new(bytes.to_vec())),
            Ok(Ok(Err(e))) => Err(e.into()),
            Ok(Err(_)) | Err(_) => Err(FetchError::ChunkTimeout {
                app_name: app_name.to_owned(),
                waited: self.timeout,
            }),
        }
    }

    fn on_chunk(&self, chunk: Chunk) {
        let data = match STANDARD.decode(&chunk.data) {
            Ok(d) => d,
            Err(e) => {
                return warn!(app_name = %chunk.app_name, idx = chunk.chunk_idx, "ignoring a chunk with invalid base64: {e}");
            }
        };
        let mut st = self.lock();
        if !st.assembler.is_expected(&chunk.app_name) {
            return debug!(app_name = %chunk.app_name, "ignoring a chunk nobody here asked for");
        }
        let outcome =
            st.assembler
                .accept(&chunk.app_name, chunk.chunk_idx, chunk.total_chunks, data);
        let done: Result<Arc<[u8]>, ChunkError> = match outcome {
            Ok(None) => return,
            Ok(Some(bytes)) => Ok(bytes.into()),
            Err(e @ (ChunkError::TooLarge { .. } | ChunkError::ConflictingData { .. })) => Err(e),
            Err(e) => return warn!("ignoring a chunk: {e}"),
        };
        for (_, waiter) in st.waiters.remove(&chunk.app_name).unwrap_or_default() {
            // A waiter that timed out meanwhile has dropped its receiver.
            waiter.send(done.clone()).ok();
        }
    }

    fn lock(&self) -> MutexGuard<'_, RegistryState> {
        // Poisoning would need a panic while holding the lock; the maps stay consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Removes a waiter when its fetch ends (done, timed out or cancelled); the last waiter of
/// a transfer also drops the assembly, so stale transfers never linger.
struct WaiterGuard<'a> {
    registry: &'a Registry,
    app_name: &'a str,
    id: u64,
}

impl Drop for WaiterGuard<'_> {
    fn drop(&mut self) {
        let mut st = self.registry.lock();
        let Some(list) = st.waiters.get_mut(self.app_name) else {
            return;
        };
        list.retain(|(id, _)| *id != self.id);
        if list.is_empty() {
            st.waiters.remove(self.app_name);
            st.assembler.forget(self.app_name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(text: &str) -> url::Url {
        url::Url::parse(text).expect("url")
    }

    #[test]
    fn tasks_with_one_digest_share_one_copy() {
        let settings = FetchSettings {
            chunk_timeout: Duration::from_secs(1),
            max_binary_bytes: 1 << 20,
            max_assemblies: 1,
            http_timeout: Duration::from_secs(1),
        };
        let (publisher, _rx) = Publisher::channel(1);
        let fetcher = Fetcher::new(&settings, publisher, Policy::default());
        let a = fetcher.share(Binary::new(vec![1, 2, 3]));
        let b = fetcher.share(Binary::new(vec![1, 2, 3]));
        assert!(Arc::ptr_eq(&a.bytes, &b.bytes));
        let c = fetcher.share(Binary::new(vec![4]));
        assert!(!Arc::ptr_eq(&a.bytes, &c.bytes));
        drop((a, b));
        let d = fetcher.share(Binary::new(vec![1, 2, 3]));
        assert_eq!(
            Arc::strong_count(&d.bytes),
            1,
            "a copy no longer used is not kept"
        );
    }

    #[test]
    fn every_redirect_hop_is_checked_against_the_allowed_sources() {
        let policy = Policy::new("inline,*.example.com", false, Vec::new()).expect("policy");
        let from = [url("https://a.example.com/x.wasm")];
        assert!(check_redirect(&policy, &from, &url("https://b.example.com/x.wasm")).is_ok());
        let denied = check_redirect(&policy, &from, &url("https://evil.net/x.wasm"));
        assert!(
            denied
                .expect_err("denied")
                .contains("PROPLET_ALLOWED_SOURCES")
        );
        let metadata = check_redirect(&policy, &from, &url("http://169.254.169.254/latest"));
        assert!(metadata.is_err());
    }

    #[test]
    fn https_never_steps_down_and_chains_are_short() {
        let policy = Policy::default();
        let secure = [url("https://a.example.com/x.wasm")];
        let down = check_redirect(&policy, &secure, &url("http://a.example.com/x.wasm"));
        assert!(down.expect_err("downgrade").contains("from https"));
        assert!(check_redirect(&policy, &secure, &url("file:///etc/passwd")).is_err());
        let long: Vec<_> = (0..6)
            .map(|n| url(&format!("http://a.example.com/{n}")))
            .collect();
        assert!(check_redirect(&policy, &long, &url("http://a.example.com/x")).is_err());
        let plain = [url("http://a.example.com/x.wasm")];
        assert!(check_redirect(&policy, &plain, &url("https://a.example.com/y.wasm")).is_ok());
    }
}
