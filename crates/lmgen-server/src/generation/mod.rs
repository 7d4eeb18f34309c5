//! One HTTP generation request through the engine: a request per choice (`n` per prompt), their
//! updates gathered into one response or streamed as server-sent events. Dropping the response
//! (a client that went away) cancels every unfinished choice, which frees its blocks.

mod framing;
pub mod messages;
pub mod responses;
mod sse;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::response::{IntoResponse, Response};
use axum::Json;
use lmgen::engine::{
    ContinuousBatchingManager, Request, RequestStatus, RequestUpdate, TokenLogprob,
};
use lmgen::generation::FinishReason;
use lmgen::TokenId;
use tokio::sync::mpsc;

use crate::api::response::{
    ChatChoice, ChatCompletion, ChatLogprobs, ChatMessage, ChatTokenLogprob, Completion,
    CompletionChoice, CompletionLogprobs, FunctionCall, Head, ToolCallOut, TopLogprob, Usage,
};
use crate::error::{ApiError, RequestNames};
use crate::state::{AppState, InFlight};
use crate::text::ChoiceText;
use crate::tool_calls::{
    OutputParser, ParsedDelta, ReasoningTokens, ThinkingBudgetLogitsProcessor,
};
use crate::validate::Plan;

/// Which API shape to answer in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Completions,
    Chat,
}

impl Endpoint {
    /// The `endpoint` label of the request metrics.
    pub fn name(self) -> &'static str {
        match self {
            Endpoint::Completions => "completions",
            Endpoint::Chat => "chat_completions",
        }
    }
}

/// A validated request: tokenized prompts and settings.
#[derive(Debug)]
pub struct Job {
    pub endpoint: Endpoint,
    pub model: String,
    pub prompts: Vec<Vec<TokenId>>,
    pub plan: Plan,
    /// What the request calls the prompt and the length limit (errors name them).
    pub names: RequestNames,
}

/// Cancels the engine requests of choices that have not ended when dropped.
struct CancelGuard {
    manager: Arc<ContinuousBatchingManager>,
    ids: Vec<String>,
    done: Vec<bool>,
    state: Arc<AppState>,
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        let mut cancelled = false;
        for (id, done) in self.ids.iter().zip(&self.done) {
            if !done {
                self.manager.cancel_request(id);
                cancelled = true;
            }
        }
        if cancelled {
            self.state.metrics.client_disconnects.inc();
            tracing::info!(request = ?self.ids.first(), "client went away: cancelled");
        }
    }
}

/// One choice's progress.
struct Choice {
    /// The tool-call and reasoning parse of a chat output that has one.
    output: Option<OutputParser>,
    /// Its reasoning tokens, when the output reads thinking markers.
    reasoning_tokens: Option<ReasoningTokens>,
    text: ChoiceText,
    tokens: usize,
    logprobs: Vec<TokenLogprob>,
    finish: Option<&'static str>,
    /// The answer to the error that ended it ([`ApiError::from_lmgen`] of the engine's error).
    error: Option<ApiError>,
    last_at: Option<Instant>,
}

impl Choice {
    /// The answer's text: all of it, or the content a parsed output found (without reasoning).
    fn content(&self) -> &str {
        match &self.output {
            None => self.text.full(),
            Some(output) => &output.parsed().content,
        }
    }
}

fn finish_name(reason: Option<FinishReason>) -> &'static str {
    match reason {
        Some(FinishReason::Length) => "length",
        _ => "stop",
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn new_id(endpoint: Endpoint) -> String {
    let prefix = match endpoint {
        Endpoint::Completions => "cmpl",
        Endpoint::Chat => "chatcmpl",
    };
    format!("{prefix}-{:016x}", rand::random::<u64>())
}

/// Runs `job`: the JSON answer, or the event stream.
pub async fn respond(state: Arc<AppState>, job: Job) -> Result<Response, ApiError> {
    let stream = job.plan.stream;
    let run = start(state, job)?;
    if stream {
        Ok(run.stream().into_response())
    } else {
        run.collect().await
    }
}

/// Admits `job` and submits its choices to the engine.
fn start(state: Arc<AppState>, job: Job) -> Result<Run, ApiError> {
    let n = job.plan.n;
    let slots = state.admit(job.prompts.len() * n)?;
    let context = state.context_length;
    let mut max_new = Vec::with_capacity(job.prompts.len());
    for prompt in &job.prompts {
        let t = prompt.len();
        if t == 0 {
            return Err(ApiError::invalid(
                job.names.prompt,
                "the prompt has no tokens",
            ));
        }
        if t >= context {
            return Err(ApiError::context_length(
                job.names.prompt,
                format!(
                    "This model's maximum context length is {context} tokens. However, your request has {t} input tokens."
                ),
            ));
        }
        let wanted = job.plan.max_tokens.unwrap_or(match job.endpoint {
            Endpoint::Completions => 16, // OpenAI's default for completions
            Endpoint::Chat => context - t,
        });
        if t + wanted > context {
            let param = job.names.max_tokens;
            return Err(ApiError::context_length(
                param,
                format!(
                    "This model's maximum context length is {context} tokens and your request has {t} input tokens, \
                     so `{param}` can be at most {} (got {wanted}).",
                    context - t
                ),
            ));
        }
        max_new.push(wanted);
    }
    let id = new_id(job.endpoint);
    let (tx, rx) = mpsc::unbounded_channel::<(usize, RequestUpdate)>();
    let mut guard = CancelGuard {
        manager: state.manager.clone(),
        ids: Vec::new(),
        done: Vec::new(),
        state: state.clone(),
    };
    let dropped = job
        .plan
        .output
        .as_ref()
        .map(|o| state.model_format.dropped(o))
        .unwrap_or_default();
    let grammar = match &job.plan.grammar {
        Some(g) => {
            let param = job.plan.grammar_param.unwrap_or("response_format");
            Some(
                state
                    .structured(param)?
                    .processor(g)
                    .map_err(|e| ApiError::invalid(param, format!("`{param}`: {e}")))?,
            )
        }
        None => None,
    };
    for (p, prompt) in job.prompts.iter().enumerate() {
        for j in 0..n {
            let index = p * n + j;
            let mut request = Request::new(
                prompt.clone(),
                job.plan.config(&state.generation_config, max_new[p]),
            );
            request.request_id = Some(format!("{id}-{index}"));
            request.seed = job.plan.seed.map(|s| s.wrapping_add(j as u64));
            request.logprobs = job.plan.logprobs;
            let refused = |e: lmgen::Error| ApiError::from_lmgen(&e, &job.names);
            request.logits_processors = job
                .plan
                .processors(prompt.len(), grammar.as_ref())
                .map_err(refused)?;
            if let (Some(budget), Some(output)) = (job.plan.thinking_budget, &job.plan.output) {
                let budget = ThinkingBudgetLogitsProcessor::new(
                    output,
                    budget,
                    prompt.len(),
                    state.tokenizer.clone(),
                    dropped.clone(),
                );
                // Before the grammar, which runs last.
                let at = request.logits_processors.len() - usize::from(grammar.is_some());
                if let Some(b) = budget {
                    request.logits_processors.insert(at, Box::new(b));
                }
            }
            let tx = tx.clone();
            let sink = move |u: RequestUpdate| tx.send((index, u)).is_ok();
            let rid = state
                .manager
                .add_request_with_sink(request, Box::new(sink))
                .map_err(refused)?;
            guard.ids.push(rid);
            guard.done.push(false);
        }
    }
    drop(tx);
    let prompt_tokens: usize = job.prompts.iter().map(Vec::len).sum();
    state.metrics.prompt_tokens.inc_by(prompt_tokens as u64);
    let run = Run {
        state: state.clone(),
        endpoint: job.endpoint,
        id,
        model: job.model,
        created: unix_now(),
        started: Instant::now(),
        choices: (0..guard.ids.len())
            .map(|_| Choice {
                output: job.plan.output.clone().map(OutputParser::new),
                reasoning_tokens: job.plan.output.as_ref().and_then(ReasoningTokens::new),
                text: ChoiceText::new(job.plan.stop.clone()),
                tokens: 0,
                logprobs: Vec::new(),
                finish: None,
                error: None,
                last_at: None,
            })
            .collect(),
        prompt_tokens,
        include_usage: job.plan.include_usage,
        with_logprobs: job.plan.logprobs.is_some(),
        dropped,
        guard,
        rx,
        names: job.names,
        _slots: slots,
    };
    Ok(run)
}

/// A new tool call id (`call_` and 24 random hex digits).
fn call_id() -> String {
    format!(
        "call_{:016x}{:08x}",
        rand::random::<u64>(),
        rand::random::<u32>()
    )
}

/// The message of a finished chat choice: its text, or what the parse found in it.
fn chat_message(c: &Choice) -> ChatMessage {
    let Some(output) = &c.output else {
        return ChatMessage {
            role: "assistant",
            content: Some(c.text.full().to_string()),
            reasoning_content: None,
            tool_calls: None,
        };
    };
    let p = output.parsed();
    ChatMessage {
        role: "assistant",
        content: (!p.content.is_empty()).then(|| p.content.clone()),
        reasoning_content: (!p.reasoning.is_empty()).then(|| p.reasoning.clone()),
        tool_calls: (!p.calls.is_empty()).then(|| {
            p.calls
                .iter()
                .map(|call| ToolCallOut {
                    id: call_id(),
                    kind: "function",
                    function: FunctionCall {
                        name: call.name.clone(),
                        arguments: call.arguments.clone(),
                    },
                })
                .collect()
        }),
    }
}

/// A request in progress.
struct Run {
    state: Arc<AppState>,
    endpoint: Endpoint,
    id: String,
    model: String,
    created: u64,
    started: Instant,
    choices: Vec<Choice>,
    prompt_tokens: usize,
    include_usage: bool,
    with_logprobs: bool,
    /// Special tokens left out of a parsed output's text (the parser's markers are kept).
    dropped: HashSet<TokenId>,
    guard: CancelGuard,
    rx: mpsc::UnboundedReceiver<(usize, RequestUpdate)>,
    /// What the request calls its fields (an engine error names them).
    names: RequestNames,
    _slots: InFlight,
}

/// What one update changed for its choice.
struct Delta {
    /// New content.
    text: String,
    /// New reasoning and calls (of a parsed output).
    parsed: ParsedDelta,
    logprobs: Vec<TokenLogprob>,
    finish: Option<&'static str>,
    error: Option<ApiError>,
}

impl Run {
    /// Folds an update into its choice.
    fn apply(&mut self, index: usize, update: RequestUpdate) -> Delta {
        let state = self.state.clone();
        let metrics = &self.state.metrics;
        let c = &mut self.choices[index];
        if !update.new_tokens.is_empty() {
            match c.last_at {
                None => metrics
                    .time_to_first_token
                    .observe(update.at.duration_since(self.started).as_secs_f64()),
                Some(prev) => metrics
                    .inter_token_latency
                    .observe(update.at.duration_since(prev).as_secs_f64()),
            }
            c.last_at = Some(update.at);
            metrics
                .generation_tokens
                .inc_by(update.new_tokens.len() as u64);
        }
        let was_stopped = c.text.stopped;
        let last = update.status.is_final();
        let open = c.finish.is_none() && c.error.is_none();
        let mut text = match &c.output {
            None => c.text.push(&state.detokenizer, &update.new_tokens, last),
            Some(_) => {
                // One token at a time, so that each is counted where the text stands after it.
                let mut text = String::new();
                let n = update.new_tokens.len();
                for (i, &t) in update.new_tokens.iter().enumerate() {
                    let kept: &[TokenId] = match self.dropped.contains(&t) {
                        true => &[],
                        false => &[t],
                    };
                    let end = last && i + 1 == n;
                    if !kept.is_empty() || end {
                        text.push_str(&c.text.push(&state.raw_detokenizer, kept, end));
                    }
                    if let (Some(r), true) = (&mut c.reasoning_tokens, open) {
                        r.push(c.text.full());
                    }
                }
                if n == 0 && last {
                    text.push_str(&c.text.push(&state.raw_detokenizer, &[], true));
                }
                text
            }
        };
        let mut parsed = ParsedDelta::default();
        if let (Some(output), true) = (&mut c.output, open) {
            parsed = output.push(&text, last || c.text.stopped);
            text = std::mem::take(&mut parsed.content);
        }
        if open {
            // Tokens that come after the choice ended (a stop sequence in the text) don't count.
            c.tokens += update.new_tokens.len();
        }
        if open {
            c.logprobs.extend(update.logprobs.iter().cloned());
        }
        let mut delta = Delta {
            text,
            parsed,
            logprobs: update.logprobs,
            finish: None,
            error: None,
        };
        if c.finish.is_some() || c.error.is_some() {
            delta.text.clear();
            return delta;
        }
        if c.text.stopped && !was_stopped {
            // The stop sequence showed in the text: done, whatever the engine does next.
            c.finish = Some("stop");
            self.guard.done[index] = true;
            if !last {
                self.state.manager.cancel_request(&self.guard.ids[index]);
            }
        } else if last {
            self.guard.done[index] = true;
            match update.status {
                RequestStatus::Finished => c.finish = Some(finish_name(update.finish_reason)),
                _ => {
                    c.error = Some(match &update.error {
                        Some(e) => ApiError::from_lmgen(e, &self.names),
                        None => ApiError::internal("the request was cancelled"),
                    })
                }
            }
        }
        if c.finish == Some("stop")
            && c.output
                .as_ref()
                .is_some_and(|o| !o.parsed().calls.is_empty())
        {
            c.finish = Some("tool_calls");
        }
        delta.finish = c.finish;
        delta.error = c.error.clone();
        delta
    }

    fn all_done(&self) -> bool {
        self.choices
            .iter()
            .all(|c| c.finish.is_some() || c.error.is_some())
    }

    fn usage(&self) -> Usage {
        let completion: usize = self.choices.iter().map(|c| c.tokens).sum();
        let usage = Usage::new(self.prompt_tokens, completion);
        match self.endpoint {
            Endpoint::Completions => usage,
            Endpoint::Chat => usage.with_reasoning_tokens(self.reasoning_tokens()),
        }
    }

    /// The reasoning tokens of every choice (see `tool_calls::ReasoningTokens`).
    fn reasoning_tokens(&self) -> usize {
        self.choices
            .iter()
            .filter_map(|c| c.reasoning_tokens.as_ref())
            .map(ReasoningTokens::count)
            .sum()
    }

    /// Waits for every choice; the error of one that failed.
    async fn wait(&mut self) -> Result<(), ApiError> {
        while !self.all_done() {
            let Some((index, update)) = self.rx.recv().await else {
                break;
            };
            self.apply(index, update);
        }
        match self.choices.iter().find_map(|c| c.error.clone()) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Waits for every choice and answers in one JSON object.
    async fn collect(mut self) -> Result<Response, ApiError> {
        self.wait().await?;
        Ok(match self.endpoint {
            Endpoint::Completions => Json(Completion {
                head: self.head(Completion::OBJECT),
                choices: self
                    .choices
                    .iter()
                    .enumerate()
                    .map(|(index, c)| CompletionChoice {
                        index,
                        text: c.text.full().to_string(),
                        logprobs: self.completion_logprobs(&c.logprobs),
                        finish_reason: c.finish,
                    })
                    .collect(),
                usage: self.usage(),
            })
            .into_response(),
            Endpoint::Chat => Json(ChatCompletion {
                head: self.head(ChatCompletion::OBJECT),
                choices: self
                    .choices
                    .iter()
                    .enumerate()
                    .map(|(index, c)| ChatChoice {
                        index,
                        message: chat_message(c),
                        logprobs: self.chat_logprobs(&c.logprobs),
                        finish_reason: c.finish,
                    })
                    .collect(),
                usage: self.usage(),
            })
            .into_response(),
        })
    }

    /// The fields every answer and chunk of this request begins with.
    fn head(&self, object: &'static str) -> Head {
        Head {
            id: self.id.clone(),
            object,
            created: self.created,
            model: self.model.clone(),
            system_fingerprint: None,
        }
    }

    fn token_text(&self, id: TokenId) -> String {
        self.state
            .tokenizer
            .decode(&[id], false)
            .unwrap_or_default()
    }

    /// The completions' `logprobs` of `lps` (`None` when not asked for).
    fn completion_logprobs(&self, lps: &[TokenLogprob]) -> Option<CompletionLogprobs> {
        if !self.with_logprobs {
            return None;
        }
        let mut out = CompletionLogprobs::default();
        let mut offset = 0;
        for lp in lps {
            let t = self.token_text(lp.token);
            out.text_offset.push(offset);
            offset += t.len();
            out.tokens.push(t);
            out.token_logprobs.push(f64::from(lp.logprob));
            out.top_logprobs.push(
                lp.top
                    .iter()
                    .map(|&(id, l)| (self.token_text(id), f64::from(l)))
                    .collect(),
            );
        }
        Some(out)
    }

    /// The chat `logprobs` of `lps` (`None` when not asked for).
    fn chat_logprobs(&self, lps: &[TokenLogprob]) -> Option<ChatLogprobs> {
        if !self.with_logprobs {
            return None;
        }
        let top = |id: TokenId, logprob: f32| {
            let token = self.token_text(id);
            TopLogprob {
                bytes: token.as_bytes().to_vec(),
                token,
                logprob: f64::from(logprob),
            }
        };
        let content = lps
            .iter()
            .map(|lp| {
                let TopLogprob {
                    token,
                    logprob,
                    bytes,
                } = top(lp.token, lp.logprob);
                ChatTokenLogprob {
                    token,
                    logprob,
                    bytes,
                    top_logprobs: lp.top.iter().map(|&(t, l)| top(t, l)).collect(),
                }
            })
            .collect();
        Some(ChatLogprobs {
            content,
            refusal: None,
        })
    }
}
