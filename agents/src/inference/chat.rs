//! Chat prompts: the conversation (`messages`) rendered through the model's own chat template,
//! the Jinja text a GGUF file carries in `tokenizer.chat_template`, as Hugging Face
//! `transformers` and llama.cpp render it (MiniJinja with Python-compatible string methods,
//! `trim_blocks` and `lstrip_blocks`, `raise_exception`, the generation prompt asked for).
//!
//! No `strftime_now` is offered, so templates that would print today's date (Llama 3.1's)
//! fall back to their fixed one: the same conversation renders to the same prompt on every
//! run, and greedy decoding stays reproducible.

use minijinja::syntax::SyntaxConfig;
use minijinja::{Environment, ErrorKind, context};
use serde::{Deserialize, Serialize};

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant` (what the template knows).
    pub role: String,
    /// The text.
    pub content: String,
}

impl ChatMessage {
    /// A message from `role`.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// A model's chat template, ready to render.
#[derive(Debug)]
pub struct ChatTemplate {
    environment: Environment<'static>,
    beginning: String,
    end: String,
}

/// The most instructions one render may execute: far more than any conversation a model
/// takes (a ChatML turn costs tens), far less than a hostile template's nested loops.
pub const TEMPLATE_FUEL: u64 = 2_000_000;

/// The name the template is stored under in its environment.
const TEMPLATE: &str = "chat";

impl ChatTemplate {
    /// Compiles `source`; `beginning` and `end` are the texts of the model's
    /// beginning- and end-of-sequence tokens (`bos_token`, `eos_token` in the template).
    pub fn new(source: &str, beginning: &str, end: &str) -> Result<Self, String> {
        let mut environment = Environment::new();
        let syntax = SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .map_err(|e| e.to_string())?;
        environment.set_syntax(syntax);
        // A template comes inside a model file, written by whoever made it: bound the work
        // one render may do (a loop nested in a loop would otherwise run for minutes).
        environment.set_fuel(Some(TEMPLATE_FUEL));
        environment
            .set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        environment.add_function(
            "raise_exception",
            |message: String| -> Result<String, minijinja::Error> {
                Err(minijinja::Error::new(ErrorKind::InvalidOperation, message))
            },
        );
        environment
            .add_template_owned(TEMPLATE, source.to_string())
            .map_err(|e| e.to_string())?;
        Ok(Self {
            environment,
            beginning: beginning.to_string(),
            end: end.to_string(),
        })
    }

    /// The prompt for `messages`, ending where the assistant's answer starts.
    pub fn render(&self, messages: &[ChatMessage]) -> Result<String, String> {
        let template = self
            .environment
            .get_template(TEMPLATE)
            .map_err(|e| e.to_string())?;
        template
            .render(context! {
                messages => minijinja::value::Serde(messages),
                add_generation_prompt => true,
                bos_token => &self.beginning,
                eos_token => &self.end,
            })
            .map_err(|e| match e.detail() {
                Some(detail) => detail.to_string(),
                None => e.to_string(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Qwen 2.5's template (ChatML, with a default system message), as its GGUF files carry it,
    /// tool calls left out.
    const QWEN: &str = "{%- if messages[0]['role'] == 'system' %}\n    {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}\n{%- else %}\n    {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}\n{%- endif %}\n{%- for message in messages %}\n    {%- if (message.role == \"user\") or (message.role == \"system\" and not loop.first) or (message.role == \"assistant\") %}\n        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}\n    {%- endif %}\n{%- endfor %}\n{%- if add_generation_prompt %}\n    {{- '<|im_start|>assistant\\n' }}\n{%- endif %}\n";

    /// Mistral Instruct v0.1's template: `bos_token`, alternation enforced with
    /// `raise_exception`, Python string methods.
    const MISTRAL: &str = "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'].strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token + ' ' }}{% endif %}{% endfor %}";

    #[test]
    fn renders_chatml_with_the_generation_prompt() {
        let template = ChatTemplate::new(QWEN, "", "<|im_end|>").expect("compiles");
        let prompt = template
            .render(&[ChatMessage::new("user", "Which agents are online?")])
            .expect("renders");
        assert_eq!(
            prompt,
            "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n<|im_start|>user\nWhich agents are online?<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn renders_special_tokens_python_methods_and_refuses_what_the_template_refuses() {
        let template = ChatTemplate::new(MISTRAL, "<s>", "</s>").expect("compiles");
        let prompt = template
            .render(&[
                ChatMessage::new("user", "  hello "),
                ChatMessage::new("assistant", "hi"),
                ChatMessage::new("user", "ship it?"),
            ])
            .expect("renders");
        assert_eq!(
            prompt,
            "<s>[INST] hello [/INST]hi</s> [INST] ship it? [/INST]"
        );
        let refused = template
            .render(&[ChatMessage::new("assistant", "first")])
            .expect_err("roles must alternate");
        assert!(refused.contains("must alternate"), "{refused}");
    }

    #[test]
    fn a_template_that_would_run_for_minutes_runs_out_of_fuel() {
        let hostile = ChatTemplate::new(
            "{% for a in range(10000) %}{% for b in range(10000) %}x{% endfor %}{% endfor %}",
            "<s>",
            "</s>",
        )
        .expect("it compiles");
        let error = hostile
            .render(&[ChatMessage::new("user", "hi")])
            .expect_err("it runs out of fuel");
        assert!(error.contains("fuel"), "{error}");
    }

    #[test]
    fn a_template_that_does_not_compile_is_an_error() {
        assert!(ChatTemplate::new("{% for %}", "", "").is_err());
    }
}
