use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::{HeaderMap, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use pin_project_lite::pin_project;

use super::cache::StaleCache;
use crate::error::BoxError;

/// Copies a cacheable response's body as it streams past, and stores it when the stream ends.
pub(crate) struct Recorder {
    pub(crate) cache: StaleCache,
    pub(crate) key: String,
    pub(crate) status: StatusCode,
    pub(crate) version: Version,
    pub(crate) headers: HeaderMap,
    pub(crate) chunks: Vec<Bytes>,
    pub(crate) size: usize,
}

impl Recorder {
    /// Keeps a chunk; false once the body is too large to keep.
    fn keep(&mut self, data: &Bytes) -> bool {
        self.size += data.len();
        if self.size > self.cache.max_body_bytes() {
            return false;
        }
        if !data.is_empty() {
            self.chunks.push(data.clone());
        }
        true
    }

    fn commit(self) {
        let body = match self.chunks.len() {
            0 => Bytes::new(),
            1 => self.chunks.into_iter().next().unwrap_or_default(),
            _ => Bytes::from(self.chunks.concat()),
        };
        self.cache
            .insert(self.key, self.status, self.version, self.headers, body);
    }
}

pin_project! {
    /// Response body of [`FallbackService`](super::FallbackService): the inner service's body,
    /// a fallback's body, or the backup service's body.
    pub struct FallbackBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Inner {
            #[pin]
            body: B,
            recorder: Option<Box<Recorder>>,
        },
        Full {
            data: Option<Bytes>,
        },
        Boxed {
            #[pin]
            body: UnsyncBoxBody<Bytes, BoxError>,
        },
    }
}

impl<B> FallbackBody<B> {
    #[inline]
    pub(crate) fn inner(body: B) -> Self {
        Self {
            kind: Kind::Inner {
                body,
                recorder: None,
            },
        }
    }

    pub(crate) fn recorded(body: B, recorder: Box<Recorder>) -> Self {
        Self {
            kind: Kind::Inner {
                body,
                recorder: Some(recorder),
            },
        }
    }

    pub(crate) fn full(data: Bytes) -> Self {
        Self {
            kind: Kind::Full {
                data: (!data.is_empty()).then_some(data),
            },
        }
    }

    /// As axum's `Body`: the inner body as it is when nothing records it, else this body boxed.
    #[cfg(feature = "axum")]
    #[inline]
    pub(crate) fn into_axum(self) -> axum_core::body::Body
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        match self.kind {
            Kind::Inner {
                body,
                recorder: None,
            } => axum_core::body::Body::new(body),
            kind => axum_core::body::Body::new(Self { kind }),
        }
    }

    pub(crate) fn boxed(body: UnsyncBoxBody<Bytes, BoxError>) -> Self {
        Self {
            kind: Kind::Boxed { body },
        }
    }
}

impl<B> std::fmt::Debug for FallbackBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.kind {
            Kind::Inner { .. } => "inner",
            Kind::Full { .. } => "full",
            Kind::Boxed { .. } => "backup",
        };
        f.debug_struct("FallbackBody").field("kind", &kind).finish()
    }
}

impl<B> Body for FallbackBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project().kind.project() {
            KindProj::Full { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            KindProj::Boxed { body } => body.poll_frame(cx),
            KindProj::Inner { mut body, recorder } => {
                let frame = ready!(body.as_mut().poll_frame(cx));
                if recorder.is_some() {
                    match &frame {
                        Some(Ok(f)) => match f.data_ref() {
                            Some(data) => {
                                if !recorder.as_mut().is_some_and(|r| r.keep(data)) {
                                    *recorder = None;
                                } else if body.is_end_stream() {
                                    // The last frame: a server that knows the length may not
                                    // poll again.
                                    if let Some(r) = recorder.take() {
                                        r.commit();
                                    }
                                }
                            }
                            // Trailers end the stream.
                            None => {
                                if let Some(r) = recorder.take() {
                                    r.commit();
                                }
                            }
                        },
                        Some(Err(_)) => *recorder = None,
                        None => {
                            if let Some(r) = recorder.take() {
                                r.commit();
                            }
                        }
                    }
                }
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full { data } => data.is_none(),
            Kind::Boxed { body } => body.is_end_stream(),
            // While recording, ask to be polled to the end so the entry is stored.
            Kind::Inner { body, recorder } => recorder.is_none() && body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            Kind::Boxed { body } => body.size_hint(),
            Kind::Inner { body, .. } => body.size_hint(),
        }
    }
}
