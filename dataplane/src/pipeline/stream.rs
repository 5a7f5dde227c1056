//! Streaming responses: relay each upstream chunk to the caller as soon as it is a complete SSE
//! event, account usage on the way, and record the request when the stream ends, fails, times
//! out or the caller goes away. Dropping this body (the client disconnected) drops the upstream
//! response body, which closes the upstream connection and so cancels the generation.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::StatusCode;
use http_body::{Body, Frame};
use hyper::body::Incoming;
use tokio::time::Sleep;

use super::ctx::Ctx;
use super::route::InFlight;
use crate::error::GatewayError;
use crate::llm::providers::StreamTranslator;

pub enum Source {
    Upstream {
        body: Incoming,
        translator: Box<dyn StreamTranslator>,
        _in_flight: InFlight,
    },
    /// Events of the mock model, made one at a time as the client reads them, paced by
    /// `interval`.
    Mock {
        events: crate::llm::providers::mock::StreamEvents,
        interval: Duration,
        pause: Option<Pin<Box<Sleep>>>,
    },
}

pub struct RelayBody {
    source: Source,
    ready: VecDeque<Bytes>,
    scratch: Vec<Bytes>,
    ctx: Ctx,
    deadline: Pin<Box<Sleep>>,
    ended: bool,
    /// How the stream ended, for the record.
    outcome: (&'static str, Option<String>),
}

impl RelayBody {
    pub fn new(source: Source, ctx: Ctx, deadline: Instant) -> RelayBody {
        RelayBody {
            source,
            ready: VecDeque::new(),
            scratch: Vec::new(),
            ctx,
            deadline: Box::pin(tokio::time::sleep_until(deadline.into())),
            ended: false,
            outcome: ("ok", None),
        }
    }

    fn fail(&mut self, err: GatewayError) {
        self.ready.push_back(err.sse_event());
        self.outcome = (err.reason(), Some(err.to_string()));
        self.ended = true;
    }

    fn collect_usage(&mut self) {
        if let Source::Upstream { translator, .. } = &self.source {
            self.ctx.usage(translator.usage(), translator.model());
        }
    }
}

impl RelayBody {
    /// Advances the source by one step: Ready when it produced events or ended, Pending when
    /// nothing is available right now.
    fn pull(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.deadline.as_mut().poll(cx).is_ready() {
            let model = self
                .ctx
                .rec
                .model_served
                .as_deref()
                .unwrap_or_default()
                .to_owned();
            self.fail(GatewayError::UpstreamTimeout(model));
            return Poll::Ready(());
        }
        match &mut self.source {
            Source::Upstream {
                body, translator, ..
            } => match Pin::new(body).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        let fed = translator.feed(&data, &mut self.scratch);
                        self.ready.extend(self.scratch.drain(..));
                        if let Err(e) = fed {
                            self.fail(e);
                        } else if translator.completed() {
                            // `[DONE]` is the end, whether or not the upstream closes the body
                            // right after it.
                            if translator.errored() {
                                self.outcome = ("upstream_stream_error", None);
                            }
                            self.ended = true;
                        }
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    tracing::warn!(request_id = self.ctx.request_id(), error = %e, "upstream stream broke");
                    self.fail(GatewayError::BadUpstreamResponse(
                        "the upstream connection closed in the middle of the stream".into(),
                    ));
                }
                Poll::Ready(None) => {
                    translator.finish(&mut self.scratch);
                    self.ready.extend(self.scratch.drain(..));
                    if translator.errored() {
                        self.outcome = ("upstream_stream_error", None);
                    } else if !translator.completed() {
                        self.outcome = ("upstream_incomplete", None);
                    }
                    self.ended = true;
                }
            },
            Source::Mock {
                events,
                interval,
                pause,
            } => {
                if let Some(p) = pause {
                    if p.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    *pause = None;
                }
                match events.next() {
                    None => self.ended = true,
                    Some(e) => {
                        self.ready.push_back(e);
                        if !interval.is_zero() && !events.is_done() {
                            *pause = Some(Box::pin(tokio::time::sleep(*interval)));
                        }
                    }
                }
            }
        }
        Poll::Ready(())
    }
}

impl Body for RelayBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        // Take everything the source has ready now, then send it as one frame: one write to
        // the client per upstream read, not one per event.
        while !this.ended && this.ready.len() < 256 && this.pull(cx).is_ready() {}
        if !this.ready.is_empty() {
            this.ctx.first_token();
            let frame = if this.ready.len() == 1 {
                this.ready.pop_front().unwrap_or_default()
            } else {
                let len = this.ready.iter().map(Bytes::len).sum();
                let mut joined = BytesMut::with_capacity(len);
                for b in this.ready.drain(..) {
                    joined.extend_from_slice(&b);
                }
                joined.freeze()
            };
            return Poll::Ready(Some(Ok(Frame::data(frame))));
        }
        if this.ended {
            this.collect_usage();
            let (reason, msg) = this.outcome.clone();
            this.ctx.finish(StatusCode::OK, reason, msg);
            return Poll::Ready(None);
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        false
    }
}

impl Drop for RelayBody {
    fn drop(&mut self) {
        // Still running: the caller went away (or shutdown cut it). Record what was used up to
        // here.
        self.collect_usage();
        let reason = self.ctx.gw.unfinished_reason();
        self.ctx.finish(StatusCode::OK, reason, None);
    }
}
