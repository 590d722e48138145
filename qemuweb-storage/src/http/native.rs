//! The native transport: `ureq` (blocking) on a helper thread per request, so several
//! requests really run at once under any executor.

use super::{FetchError, RangeRequest, RawResponse};
use crate::error::{Result, StorageError};
use futures::channel::oneshot;
use std::io::Read;
use std::time::Duration;

pub(crate) struct Transport {
    agent: ureq::Agent,
}

impl Transport {
    pub(crate) fn new(timeout: Duration) -> Result<Self> {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(timeout))
            // Redirects come back as answers: the protocol decides which to follow.
            .max_redirects(0)
            .build();
        Ok(Self {
            agent: config.new_agent(),
        })
    }

    pub(crate) async fn get(
        &self,
        req: &RangeRequest<'_>,
    ) -> std::result::Result<RawResponse, FetchError> {
        let agent = self.agent.clone();
        let url = req.url.to_string();
        let range = format!("bytes={}-{}", req.start, req.end);
        let if_range = req.if_range.map(str::to_string);
        let max_body = req.max_body;
        let (tx, rx) = oneshot::channel();
        std::thread::Builder::new()
            .name("qemuweb-http".into())
            .spawn(move || {
                let _ = tx.send(blocking_get(&agent, &url, &range, if_range, max_body));
            })
            .map_err(|e| FetchError::Transient(format!("cannot start a request thread: {e}")))?;
        rx.await
            .unwrap_or_else(|_| Err(FetchError::Transient("the request thread died".into())))
    }
}

fn blocking_get(
    agent: &ureq::Agent,
    url: &str,
    range: &str,
    if_range: Option<String>,
    max_body: u64,
) -> std::result::Result<RawResponse, FetchError> {
    let mut request = agent.get(url).header("Range", range);
    if let Some(v) = &if_range {
        request = request.header("If-Range", v.as_str());
    }
    let response = request.call().map_err(|e| classify(url, e))?;
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let mut raw = RawResponse::head(response.status().as_u16(), header);
    if raw.wants_body(max_body) {
        let capacity = raw.content_length.unwrap_or(max_body).min(max_body) as usize;
        raw.body.reserve_exact(capacity);
        response
            .into_body()
            .into_reader()
            .take(max_body + 1)
            .read_to_end(&mut raw.body)
            .map_err(|e| FetchError::Transient(format!("reading the body: {e}")))?;
    }
    Ok(raw)
}

fn classify(url: &str, e: ureq::Error) -> FetchError {
    use ureq::Error as E;
    match e {
        E::BadUri(_) | E::Http(_) | E::RequireHttpsOnly(_) | E::InvalidProxyUrl => {
            FetchError::Fatal(StorageError::InvalidArgument(format!("bad URL: {e}")))
        }
        E::TooManyRedirects | E::RedirectFailed => FetchError::Fatal(StorageError::BadResponse {
            url: url.to_string(),
            reason: e.to_string(),
        }),
        other => FetchError::Transient(other.to_string()),
    }
}

/// Waits for `d` without depending on any async runtime.
pub(crate) async fn sleep(d: Duration) {
    let (tx, rx) = oneshot::channel::<()>();
    let spawned = std::thread::Builder::new()
        .name("qemuweb-sleep".into())
        .spawn(move || {
            std::thread::sleep(d);
            let _ = tx.send(());
        });
    if spawned.is_ok() {
        let _ = rx.await;
    } else {
        std::thread::sleep(d);
    }
}
