//! Every field the server takes, wrongly typed and out of range, is answered with a 400 whose
//! `param` names it, on both endpoints: one table, one row per field. A last check reads the
//! field lists of the request structs themselves, so a field added without a row fails here.
//!
//! One in-process server for every row: the router over the golden tiny Llama (context 512,
//! vocabulary 800) with a KV pool of 256 tokens, driven with `tower::ServiceExt::oneshot` (no
//! socket, no sleep).
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::OnceLock;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use clap::Parser;
use lmgen_server::api::anthropic::MessagesRequest;
use lmgen_server::api::responses::ResponsesRequest;
use lmgen_server::api::{ChatCompletionRequest, CompletionRequest, SamplingParams};
use lmgen_server::ServeArgs;
use serde_json::{json, Value};
use tower::ServiceExt;

const CONTEXT: usize = 512;
const VOCAB: usize = 800;
const POOL_TOKENS: usize = 256;

#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    serve: ServeArgs,
}

/// The server's router and a runtime to drive it (one for every test of this file).
fn server() -> &'static (tokio::runtime::Runtime, Router) {
    static SERVER: OnceLock<(tokio::runtime::Runtime, Router)> = OnceLock::new();
    SERVER.get_or_init(|| {
        let model = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../lmgen/tests/fixtures/golden/models/llama");
        let pool = POOL_TOKENS.to_string();
        let argv = [
            "serve",
            "--model",
            model.to_str().unwrap(),
            "--served-model-name",
            "tiny-llama",
            "--kv-cache-tokens",
            &pool,
        ];
        let args = Cli::try_parse_from(argv).unwrap().serve;
        let state = lmgen_server::start(&args).unwrap();
        assert_eq!((state.context_length, state.vocab_size), (CONTEXT, VOCAB));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        (runtime, lmgen_server::router(state, 1 << 20))
    })
}

/// POSTs `body` to `path`: the status and the JSON answer.
fn post(path: &str, body: &Value) -> (StatusCode, Value) {
    let (runtime, router) = server();
    let request = Request::post(path)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    runtime.block_on(async {
        let response = router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    })
}

/// `base` with the fields of `patch` set.
fn with(base: &Value, patch: &Value) -> Value {
    let mut body = base.clone();
    for (k, v) in patch.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

/// One field: bodies that set it to a wrongly typed value, bodies that set it out of its range
/// (or to a value the server refuses), and the `param` the answer must name.
struct Row {
    param: &'static str,
    wrong_type: Vec<Value>,
    out_of_range: Vec<Value>,
}

/// A top-level field: the request with `name` set to each value.
fn field(name: &'static str, wrong_type: &[Value], out_of_range: &[Value]) -> Row {
    let bodies = |values: &[Value]| values.iter().map(|v| json!({ name: v })).collect();
    Row {
        param: name,
        wrong_type: bodies(wrong_type),
        out_of_range: bodies(out_of_range),
    }
}

/// `{"tools": [tool]}`.
fn tools_of(tool: Value) -> Value {
    json!({ "tools": [tool] })
}

/// A valid function tool.
fn f_tool() -> Value {
    json!({"type": "function", "function": {"name": "f"}})
}

/// `{"tools": [...], "tool_choice": choice}` with a valid tool.
fn choosing(choice: Value) -> Value {
    json!({"tools": [f_tool()], "tool_choice": choice})
}

/// A field that takes more than itself to reach (a nested one, or one that needs another set):
/// whole bodies to patch the request with.
fn bodies(param: &'static str, wrong_type: Vec<Value>, out_of_range: Vec<Value>) -> Row {
    Row {
        param,
        wrong_type,
        out_of_range,
    }
}

/// The fields both endpoints take (`SamplingParams`: OpenAI's, then the Hugging Face extras).
fn sampling_rows() -> Vec<Row> {
    let five_stops = json!(["a", "b", "c", "d", "e"]);
    vec![
        field(
            "response_format",
            &[json!(5)],
            &[
                json!({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "no-such-type"}}}),
            ],
        ),
        // GBNF (llama.cpp's `grammar`, vLLM's `guided_grammar`): a syntax error, an undefined
        // rule, or two constraints at once.
        field(
            "grammar",
            &[json!(5)],
            &[json!("root ::= [z-a]"), json!("root ::= thing")],
        ),
        field("guided_grammar", &[json!(["x"])], &[json!("root = \"a\"")]),
        bodies(
            "guided_grammar",
            vec![],
            vec![json!({"grammar": "root ::= \"a\"", "guided_grammar": "root ::= \"a\""})],
        ),
        bodies(
            "grammar",
            vec![],
            vec![json!({"grammar": "root ::= \"a\"", "response_format": {"type": "json_object"}})],
        ),
        bodies(
            "response_format.type",
            vec![json!({"response_format": {"type": "xml"}})],
            vec![],
        ),
        bodies(
            "response_format.json_schema",
            vec![json!({"response_format": {"type": "json_schema"}})],
            vec![],
        ),
        bodies(
            "response_format.json_schema.schema",
            vec![],
            vec![
                json!({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": 5}}}),
            ],
        ),
        field(
            "max_tokens",
            &[json!("x"), json!(1.5)],
            &[json!(0), json!(-3)],
        ),
        field(
            "temperature",
            &[json!("hot"), json!([1])],
            &[json!(-0.5), json!(2.5)],
        ),
        field("top_p", &[json!("x")], &[json!(0), json!(1.5)]),
        field("n", &[json!("x"), json!(1.5)], &[json!(0), json!(129)]),
        field("stream", &[json!("yes")], &[]),
        bodies(
            "stream_options",
            vec![json!({"stream": true, "stream_options": 5})],
            // Only with `stream: true`.
            vec![json!({"stream_options": {"include_usage": true}})],
        ),
        bodies(
            "stream_options.include_usage",
            vec![json!({"stream": true, "stream_options": {"include_usage": 3}})],
            vec![],
        ),
        field(
            "stop",
            &[json!(5), json!(["a", 5])],
            &[five_stops, json!("")],
        ),
        field("seed", &[json!("x"), json!(1.5)], &[json!(-1)]),
        field("presence_penalty", &[json!("x")], &[json!(2.5)]),
        field("frequency_penalty", &[json!("x")], &[json!(-2.5)]),
        // A key that is no token id is a wrong type too; a value out of [-100, 100] is clamped.
        field(
            "logit_bias",
            &[json!([]), json!({"5": "x"}), json!({"x": 1})],
            &[json!({VOCAB.to_string(): 1})],
        ),
        field("top_k", &[json!("x")], &[json!(-2)]),
        field("min_p", &[json!("x")], &[json!(-0.1), json!(1.5)]),
        field("repetition_penalty", &[json!("x")], &[json!(0)]),
        field("min_tokens", &[json!("x")], &[json!(-1)]),
    ]
}

/// `max_tokens` (or chat's `max_completion_tokens`) beyond the KV pool (the library's
/// `Error::Input` blaming `max_new_tokens`) and beyond the context.
fn too_many(name: &'static str) -> Row {
    field(name, &[], &[json!(POOL_TOKENS + 40), json!(CONTEXT)])
}

/// The fields of `/v1/completions` besides the shared ones.
fn completion_rows() -> Vec<Row> {
    let too_long: Vec<usize> = (3..3 + CONTEXT).collect();
    vec![
        field("model", &[json!(5)], &[]),
        field(
            "prompt",
            &[json!(5), json!({"text": "x"}), json!([1, "x"]), json!([-1])],
            &[json!([]), json!([[]]), json!([VOCAB]), json!(too_long)],
        ),
        field(
            "logprobs",
            &[json!("x"), json!(true)],
            &[json!(6), json!(-1)],
        ),
        field("echo", &[json!("x")], &[json!(true)]),
        field("best_of", &[json!("x")], &[json!(2)]),
        field("suffix", &[json!(5)], &[json!("x")]),
        too_many("max_tokens"),
    ]
}

/// The fields of `/v1/chat/completions` besides the shared ones.
fn chat_rows() -> Vec<Row> {
    let user = |content: Value| json!({"messages": [{"role": "user", "content": content}]});
    vec![
        field("model", &[json!(5)], &[]),
        field("messages", &[json!("hi")], &[json!([])]),
        bodies("messages[0]", vec![json!({"messages": [5]})], vec![]),
        bodies(
            "messages[0].content",
            vec![
                user(json!(5)),
                user(json!(["text"])),
                user(json!({"text": "x"})),
            ],
            vec![],
        ),
        bodies(
            "messages[0].role",
            vec![
                json!({"messages": [{"role": 5, "content": "x"}]}),
                json!({"messages": [{"content": "x"}]}),
            ],
            vec![],
        ),
        field("max_completion_tokens", &[json!("x")], &[json!(0)]),
        too_many("max_completion_tokens"),
        too_many("max_tokens"),
        field("logprobs", &[json!(2)], &[]),
        bodies(
            "top_logprobs",
            vec![json!({"logprobs": true, "top_logprobs": "x"})],
            vec![
                json!({"logprobs": true, "top_logprobs": 21}),
                json!({"logprobs": true, "top_logprobs": -1}),
                // Only with `logprobs: true`.
                json!({"top_logprobs": 2}),
            ],
        ),
        field("tools", &[json!("x"), json!({"type": "function"})], &[]),
        bodies(
            "tools[0].type",
            vec![],
            vec![tools_of(json!({"type": "retrieval"}))],
        ),
        bodies(
            "tools[0].function",
            vec![tools_of(json!({"type": "function", "function": "f"}))],
            vec![],
        ),
        bodies(
            "tools[0].function.name",
            vec![tools_of(
                json!({"type": "function", "function": {"name": 5}}),
            )],
            vec![tools_of(
                json!({"type": "function", "function": {"name": "a b"}}),
            )],
        ),
        bodies(
            "tools[0].function.parameters",
            vec![tools_of(
                json!({"type": "function", "function": {"name": "f", "parameters": 5}}),
            )],
            vec![],
        ),
        bodies(
            "tool_choice",
            vec![choosing(json!(5)), choosing(json!({"type": "function"}))],
            vec![
                choosing(json!("sometimes")),
                // Without tools.
                json!({"tool_choice": "required"}),
                choosing(json!({"type": "function", "function": {"name": "g"}})),
                // The tiny Llama's template writes no tool calls: nothing to enforce them with.
                choosing(json!("required")),
            ],
        ),
        field("parallel_tool_calls", &[json!("x")], &[]),
        field(
            "chat_template_kwargs",
            &[json!(5), json!(["enable_thinking"])],
            &[
                json!({"add_generation_prompt": false}),
                json!({"tools": []}),
            ],
        ),
    ]
}

/// The fields of Anthropic's `/v1/messages` (its own names; no shared rows).
fn messages_rows() -> Vec<Row> {
    let user = |content: Value| json!({"messages": [{"role": "user", "content": content}]});
    let five = json!(["a", "b", "c", "d", "e"]);
    vec![
        field("model", &[json!(5)], &[]),
        field("messages", &[json!("hi")], &[json!([])]),
        bodies(
            "messages[0].role",
            vec![json!({"messages": [{"role": "system", "content": "x"}]})],
            vec![],
        ),
        bodies(
            "messages[0].content",
            vec![user(json!(5))],
            vec![user(json!([]))],
        ),
        bodies(
            "messages[0].content[0].type",
            vec![
                user(json!([{"type": "image", "source": {}}])),
                user(json!([{"text": "x"}])),
            ],
            // A tool call in a user turn.
            vec![user(
                json!([{"type": "tool_use", "id": "t", "name": "f", "input": {}}]),
            )],
        ),
        // A field inside a block is named by the block (serde reads tagged blocks whole).
        bodies(
            "messages[0].content[0]",
            vec![user(json!([{"type": "text", "text": 5}]))],
            vec![],
        ),
        field("system", &[json!(5), json!([{"type": "image"}])], &[]),
        field("max_tokens", &[json!("x")], &[json!(0)]),
        too_many("max_tokens"),
        field("temperature", &[json!("hot")], &[json!(1.5), json!(-0.1)]),
        field("top_p", &[json!("x")], &[json!(0), json!(1.5)]),
        field("top_k", &[json!("x")], &[json!(-2)]),
        field("stop_sequences", &[json!("x")], &[json!([""]), five]),
        field("stream", &[json!("x")], &[]),
        field("metadata", &[json!(5)], &[]),
        field(
            "tools",
            &[json!("x"), json!([{"name": "f"}])],
            &[json!([{"type": "web_search_20250305", "name": "web_search"}])],
        ),
        // `any` with no tools; a type that is none of Anthropic's; `tool` without its name.
        field(
            "tool_choice",
            &[json!(5)],
            &[
                json!({"type": "any"}),
                json!({"type": "sometimes"}),
                json!({"type": "tool"}),
            ],
        ),
        field(
            "thinking",
            &[
                json!(5),
                json!({"type": "adaptive"}),
                json!({"type": "enabled"}),
                json!({"type": "enabled", "budget_tokens": "many"}),
                json!({"type": "enabled", "budget_tokens": 1024, "display": "full"}),
            ],
            &[],
        ),
        // Anthropic's bounds: at least 1024, below `max_tokens`.
        bodies(
            "thinking.budget_tokens",
            vec![],
            vec![
                json!({"thinking": {"type": "enabled", "budget_tokens": 100}}),
                json!({"max_tokens": 1100, "thinking": {"type": "enabled", "budget_tokens": 1100}}),
            ],
        ),
        // The tiny Llama's template writes no thinking markers: nothing to return or budget.
        bodies(
            "thinking",
            vec![],
            vec![
                json!({"max_tokens": 1100, "thinking": {"type": "enabled", "budget_tokens": 1024}}),
            ],
        ),
        bodies(
            "messages[0].content[0].type",
            vec![],
            vec![json!({"messages": [{"role": "user", "content": [
                {"type": "thinking", "thinking": "x", "signature": ""}]}]})],
        ),
    ]
}

/// The fields of OpenAI's `/v1/responses` (no shared rows).
fn responses_rows() -> Vec<Row> {
    let item = |content: Value| json!({"input": [{"role": "user", "content": content}]});
    let schema = |schema: Value| json!({"text": {"format": {"type": "json_schema", "name": "x", "schema": schema}}});
    vec![
        field("model", &[json!(5)], &[]),
        field("input", &[json!(5)], &[json!([])]),
        bodies(
            "input[0].type",
            vec![json!({"input": [{"type": "file_search_call", "id": "x"}]})],
            vec![],
        ),
        bodies(
            "input[0].output",
            vec![json!({"input": [{"type": "function_call_output", "call_id": "c", "output": 5}]})],
            vec![],
        ),
        bodies(
            "input[0].role",
            vec![json!({"input": [{"role": "tool", "content": "x"}]})],
            vec![],
        ),
        bodies("input[0].content", vec![item(json!(5))], vec![]),
        bodies(
            "input[0].content[0].type",
            vec![item(json!([{"type": "input_image", "image_url": "x"}]))],
            vec![],
        ),
        field("instructions", &[json!(5)], &[]),
        field("max_output_tokens", &[json!("x")], &[json!(0)]),
        too_many("max_output_tokens"),
        field("temperature", &[json!("x")], &[json!(3)]),
        field("top_p", &[json!("x")], &[json!(0)]),
        field("stream", &[json!("x")], &[]),
        field("store", &[json!("x")], &[json!(true)]),
        field("previous_response_id", &[json!(5)], &[json!("resp_1")]),
        field("conversation", &[], &[json!("conv_1")]),
        field("background", &[json!("x")], &[json!(true)]),
        field("text", &[json!(5)], &[]),
        bodies(
            "text.format.type",
            vec![json!({"text": {"format": {"type": "xml"}}})],
            vec![],
        ),
        // A schema that does not compile.
        bodies(
            "text.format",
            vec![],
            vec![schema(json!({"type": "no-such-type"}))],
        ),
        bodies("text.format.schema", vec![], vec![schema(json!(5))]),
        field("tools", &[json!("x")], &[]),
        bodies(
            "tools[0].type",
            vec![],
            vec![json!({"tools": [{"type": "web_search"}]})],
        ),
        bodies(
            "tools[0].name",
            vec![json!({"tools": [{"type": "function", "name": 5}]})],
            vec![json!({"tools": [{"type": "function", "name": "a b"}]})],
        ),
        bodies(
            "tool_choice",
            vec![json!({"tools": [{"type": "function", "name": "f"}], "tool_choice": 5})],
            vec![
                json!({"tool_choice": "required"}),
                json!({"tools": [{"type": "function", "name": "f"}], "tool_choice": "sometimes"}),
                json!({"tools": [{"type": "function", "name": "f"}], "tool_choice": {"type": "function", "name": "g"}}),
            ],
        ),
        field("parallel_tool_calls", &[json!("x")], &[]),
        field("metadata", &[json!(5)], &[]),
    ]
}

fn messages_base() -> Value {
    json!({
        "model": "tiny-llama",
        "messages": [{"role": "user", "content": "Hello"}],
        "max_tokens": 2,
        "temperature": 0,
    })
}

fn responses_base() -> Value {
    json!({"model": "tiny-llama", "input": "Hello", "max_output_tokens": 2, "temperature": 0})
}

fn completion_base() -> Value {
    json!({"model": "tiny-llama", "prompt": "Hello world", "max_tokens": 2, "temperature": 0})
}

fn chat_base() -> Value {
    json!({
        "model": "tiny-llama",
        "messages": [{"role": "user", "content": "Hello"}],
        "max_tokens": 2,
        "temperature": 0,
    })
}

/// Sends every body of `rows` over `base`; returns what went wrong.
fn check(path: &str, base: &Value, rows: &[Row]) -> Vec<String> {
    let (status, answer) = post(path, base);
    assert_eq!(status, StatusCode::OK, "the base request fails: {answer}");
    let mut wrong = Vec::new();
    for row in rows {
        let bodies = row.wrong_type.iter().chain(&row.out_of_range);
        for patch in bodies {
            let (status, answer) = post(path, &with(base, patch));
            let error = &answer["error"];
            let message = error["message"].as_str().unwrap_or_default();
            // Anthropic's envelope has no `param`: its message names the field.
            let named = match path {
                "/v1/messages" => answer["type"] == "error" && message.contains(row.param),
                _ => error["param"] == row.param,
            };
            let ok = status == StatusCode::BAD_REQUEST
                && named
                && error["type"] == "invalid_request_error"
                && !message.is_empty();
            if !ok {
                wrong.push(format!("{path} {patch}: {status} {answer}"));
            }
            if std::env::var_os("LMGEN_PRINT_ANSWERS").is_some() {
                println!("{patch} -> {status} {}", error["message"]);
            }
        }
    }
    wrong
}

#[test]
fn every_field_of_both_endpoints_is_named_when_wrong() {
    let mut wrong = Vec::new();
    for (path, base, rows) in [
        ("/v1/completions", completion_base(), completion_rows()),
        ("/v1/chat/completions", chat_base(), chat_rows()),
    ] {
        let mut all = sampling_rows();
        all.extend(rows);
        wrong.extend(check(path, &base, &all));
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn every_field_of_messages_and_responses_is_named_when_wrong() {
    let mut wrong = check("/v1/messages", &messages_base(), &messages_rows());
    wrong.extend(check("/v1/responses", &responses_base(), &responses_rows()));
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // A missing `max_tokens` (required, as Anthropic's) is named too.
    let mut body = messages_base();
    body.as_object_mut().unwrap().remove("max_tokens");
    let (status, answer) = post("/v1/messages", &body);
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_tokens"),
        "{answer}"
    );
}

#[test]
fn length_errors_carry_their_code_and_the_limit() {
    let too_long: Vec<usize> = (3..3 + CONTEXT).collect();
    let cases = [
        (
            "/v1/completions",
            with(&completion_base(), &json!({"prompt": too_long})),
            "prompt",
        ),
        (
            "/v1/completions",
            with(&completion_base(), &json!({"max_tokens": CONTEXT})),
            "max_tokens",
        ),
        (
            "/v1/chat/completions",
            with(&chat_base(), &json!({"max_completion_tokens": CONTEXT})),
            "max_completion_tokens",
        ),
    ];
    for (path, body, param) in cases {
        let (status, answer) = post(path, &body);
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
        assert_eq!(answer["error"]["param"], param, "{answer}");
        assert_eq!(
            answer["error"]["code"], "context_length_exceeded",
            "{answer}"
        );
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(&format!("maximum context length is {CONTEXT} tokens")),
            "{message}"
        );
    }
    // Beyond the KV pool: the library's `Error::Input` blaming `max_new_tokens`, no code.
    let body = with(&completion_base(), &json!({"max_tokens": POOL_TOKENS + 40}));
    let (_, answer) = post("/v1/completions", &body);
    assert!(answer["error"]["code"].is_null(), "{answer}");
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("lower `max_new_tokens`")
            && message.ends_with("(`max_new_tokens` is `max_tokens` in this request)"),
        "{message}"
    );
}

#[test]
fn an_unknown_model_is_404_naming_model() {
    let (status, answer) = post(
        "/v1/messages",
        &with(&messages_base(), &json!({"model": "no-such-model"})),
    );
    assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");
    assert_eq!(
        (&answer["type"], &answer["error"]["type"]),
        (&json!("error"), &json!("not_found_error")),
        "{answer}"
    );
    for (path, base) in [
        ("/v1/completions", completion_base()),
        ("/v1/chat/completions", chat_base()),
        ("/v1/responses", responses_base()),
    ] {
        let (status, answer) = post(path, &with(&base, &json!({"model": "no-such-model"})));
        assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");
        assert_eq!(answer["error"]["param"], "model");
        assert_eq!(answer["error"]["code"], "model_not_found");
    }
}

/// The field names serde reads for `T` (a deserializer that only records them).
fn fields_of<T: serde::de::DeserializeOwned>() -> &'static [&'static str] {
    use serde::de::{self, Visitor};

    struct Fields(&'static [&'static str]);
    #[derive(Debug)]
    struct Done;
    impl std::fmt::Display for Done {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("done")
        }
    }
    impl std::error::Error for Done {}
    impl de::Error for Done {
        fn custom<M: std::fmt::Display>(_: M) -> Self {
            Done
        }
    }
    struct Recorder<'a>(&'a mut Fields);
    impl<'de> de::Deserializer<'de> for Recorder<'_> {
        type Error = Done;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Done> {
            Err(Done)
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Done> {
            self.0 .0 = fields;
            Err(Done)
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
            option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
            ignored_any
        }
    }
    let mut fields = Fields(&[]);
    let _ = T::deserialize(Recorder(&mut fields));
    fields.0
}

#[test]
fn every_field_of_the_request_structs_has_a_row() {
    let shared: Vec<&str> = sampling_rows().iter().map(|r| r.param).collect();
    let sampling = fields_of::<SamplingParams>();
    assert!(sampling.len() >= 15, "{sampling:?}");
    for (name, fields, rows) in [
        ("SamplingParams", sampling, sampling_rows()),
        (
            "CompletionRequest",
            fields_of::<CompletionRequest>(),
            completion_rows(),
        ),
        (
            "ChatCompletionRequest",
            fields_of::<ChatCompletionRequest>(),
            chat_rows(),
        ),
    ] {
        let params: Vec<&str> = rows.iter().map(|r| r.param).collect();
        for field in fields {
            assert!(
                params.contains(field) || shared.contains(field),
                "{name}.{field} has no row"
            );
        }
    }
    // The new APIs take their own fields (no shared rows).
    for (name, fields, rows) in [
        (
            "MessagesRequest",
            fields_of::<MessagesRequest>(),
            messages_rows(),
        ),
        (
            "ResponsesRequest",
            fields_of::<ResponsesRequest>(),
            responses_rows(),
        ),
    ] {
        let params: Vec<&str> = rows.iter().map(|r| r.param).collect();
        for field in fields {
            assert!(params.contains(field), "{name}.{field} has no row");
        }
    }
    // And every row is a field the server takes (or a part of one).
    let all: Vec<&str> = [
        sampling,
        fields_of::<CompletionRequest>(),
        fields_of::<ChatCompletionRequest>(),
        fields_of::<MessagesRequest>(),
        fields_of::<ResponsesRequest>(),
    ]
    .concat();
    for row in sampling_rows()
        .iter()
        .chain(&completion_rows())
        .chain(&chat_rows())
        .chain(&messages_rows())
        .chain(&responses_rows())
    {
        let root = row.param.split(['.', '[']).next().unwrap();
        assert!(all.contains(&root), "row {} is no field", row.param);
    }
}
