//! The CLI as a client of `om serve`'s HTTP API (`--server URL --key K`):
//! requests carry the API key as a bearer token; names are pushed as
//! single, percent-encoded path segments (never spliced into the URL); an
//! error answer (`{"error": {"code", "message"}}`) becomes the command's
//! one-line error.

use serde::Serialize;
use serde::de::DeserializeOwned;
use url::Url;

use super::CliError;

/// A server and the key to use it with.
#[derive(Debug, Clone)]
pub struct Remote {
    base: Url,
    key: String,
    client: reqwest::Client,
}

impl Remote {
    /// `server`: `http://host:port` or `https://…` (a path prefix is kept).
    pub fn new(server: &str, key: &str) -> Result<Self, CliError> {
        let base = Url::parse(server)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && !u.cannot_be_a_base())
            .ok_or_else(|| {
                CliError::Usage(format!(
                    "--server '{server}' is not a URL like http://127.0.0.1:8080"
                ))
            })?;
        if key.trim().is_empty() {
            return Err(CliError::Usage(
                "--server needs an API key: --key oms_… or OMEGA_API_KEY (create one with `om keys create`)".into(),
            ));
        }
        let client = reqwest::Client::builder()
            .build()
            .map_err(|e| CliError::Usage(format!("cannot start an HTTP client: {e}")))?;
        Ok(Self {
            base,
            key: key.trim().to_string(),
            client,
        })
    }

    /// `/api/v1/` followed by `segments`, each one path segment (a URL
    /// has no segment `.`, `..` or empty: such a name is refused here).
    fn url(&self, segments: &[&str]) -> Result<Url, CliError> {
        if let Some(bad) = segments.iter().find(|s| matches!(**s, "" | "." | "..")) {
            return Err(CliError::Usage(format!("'{bad}' is not a valid name")));
        }
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(["api", "v1"]).extend(segments);
        }
        Ok(url)
    }

    async fn send<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        url: Url,
        body: Option<Vec<u8>>,
    ) -> Result<T, CliError> {
        let mut request = self
            .client
            .request(method.clone(), url.clone())
            .bearer_auth(&self.key);
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        let response = request.send().await.map_err(|e| {
            CliError::Usage(format!(
                "cannot reach the server at {}: {e}",
                self.base.as_str()
            ))
        })?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| CliError::Usage(format!("{method} {url}: reading the answer: {e}")))?;
        if !status.is_success() {
            let message = serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| v["error"]["message"].as_str().map(String::from))
                .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
            return Err(CliError::Usage(format!(
                "server answered {}: {message}",
                status.as_u16()
            )));
        }
        let bytes = if bytes.is_empty() {
            bytes::Bytes::from_static(b"null")
        } else {
            bytes
        };
        serde_json::from_slice(&bytes).map_err(|e| {
            CliError::Usage(format!(
                "{method} {url}: the server's answer is not what this om expects ({e}); are client and server the same version?"
            ))
        })
    }

    pub async fn get<T: DeserializeOwned>(&self, segments: &[&str]) -> Result<T, CliError> {
        self.send(reqwest::Method::GET, self.url(segments)?, None)
            .await
    }

    /// GET with query parameters.
    pub async fn get_query<T: DeserializeOwned>(
        &self,
        segments: &[&str],
        query: &[(&str, &str)],
    ) -> Result<T, CliError> {
        let mut url = self.url(segments)?;
        url.query_pairs_mut().extend_pairs(query);
        self.send(reqwest::Method::GET, url, None).await
    }

    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        segments: &[&str],
        body: &B,
    ) -> Result<T, CliError> {
        self.send(
            reqwest::Method::POST,
            self.url(segments)?,
            Some(json(body)?),
        )
        .await
    }

    pub async fn put<B: Serialize, T: DeserializeOwned>(
        &self,
        segments: &[&str],
        body: &B,
    ) -> Result<T, CliError> {
        self.send(reqwest::Method::PUT, self.url(segments)?, Some(json(body)?))
            .await
    }

    pub async fn delete<T: DeserializeOwned>(&self, segments: &[&str]) -> Result<T, CliError> {
        self.send(reqwest::Method::DELETE, self.url(segments)?, None)
            .await
    }
}

fn json<B: Serialize>(body: &B) -> Result<Vec<u8>, CliError> {
    serde_json::to_vec(body).map_err(|e| CliError::Usage(format!("cannot encode the request: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_one_encoded_segment() {
        let r = Remote::new("http://127.0.0.1:8080/prefix/", "oms_x").unwrap();
        let u = r.url(&["jobs", "team/nightly?x=1#y", "run"]).unwrap();
        assert_eq!(
            u.as_str(),
            "http://127.0.0.1:8080/prefix/api/v1/jobs/team%2Fnightly%3Fx=1%23y/run"
        );
        for bad in ["..", ".", ""] {
            assert!(r.url(&["tasks", bad]).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn bad_servers_and_keys_are_refused() {
        for bad in ["", "127.0.0.1:8080", "ftp://h", "mailto:x@y"] {
            assert!(Remote::new(bad, "k").is_err(), "{bad}");
        }
        assert!(Remote::new("http://h:1", " ").is_err());
    }
}
