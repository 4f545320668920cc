//! # The tokenizer of a GGUF file
//!
//! A byte-level BPE tokenizer (`tokenizer.ggml.model = "gpt2"`) built with the `tokenizers` crate from
//! the file's metadata: the vocabulary `tokenizer.ggml.tokens` (byte-level strings, GPT-2's
//! byte-to-character mapping), the merges `tokenizer.ggml.merges` (`"left right"`, in rank order),
//! the token types `tokenizer.ggml.token_type`, the BOS/EOS ids and whether to add them
//! (`tokenizer.ggml.add_bos_token`, `add_eos_token`), and the pre-tokenizer that
//! `tokenizer.ggml.pre` names — the same regular expressions llama.cpp splits text with
//! (`src/llama-vocab.cpp`, `llm_tokenizer_bpe`):
//!
//! | `tokenizer.ggml.pre` | pre-tokenizer |
//! |---|---|
//! | `gpt-2`, `phi-2`, `mpt`, `olmo`, `jina-es`, `jina-de`, `jina-v2-es`, `jina-v2-de` | GPT-2's regex |
//! | `smollm`, `starcoder`, `refact`, `command-r`, `codeshell`, `exaone`, `minerva` | every digit apart (`\p{N}`), then GPT-2's regex |
//! | `llama3`, `llama-v3`, `llama-bpe`, `falcon3`, `pixtral`, `dbrx`, `smaug-bpe` | Llama 3's regex (numbers in runs of up to 3 digits) |
//! | `qwen2`, `deepseek-r1-qwen`, `stablelm2` | Qwen2's regex (every digit apart) |
//!
//! Text is tokenized as llama.cpp tokenizes plain text (its `parse_special = false`, what
//! `llama-perplexity` does): control tokens (`<|im_start|>` …) written in the text are not recognised
//! as such, user-defined tokens are; no normalisation; BOS first when the file says to add it. Other
//! tokenizer models (SentencePiece `llama`, WordPiece `bert` …) and other pre-tokenizers are refused
//! with an error naming the value.

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};

use super::super::gguf::GgufFile;
use crate::error::Result;

/// llama.cpp's regex for the Llama 3 family (case-insensitive contractions spelt out, as it adapts it).
const LLAMA3_REGEX: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// llama.cpp's regex for Qwen2.
const QWEN2_REGEX: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// llama.cpp's token types (`tokenizer.ggml.token_type`) that matter here.
const USER_DEFINED: i64 = 4;

/// How text is split before BPE (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pre {
    Gpt2,
    DigitsThenGpt2,
    Llama3,
    Qwen2,
}

impl Pre {
    fn named(name: &str) -> Option<Pre> {
        Some(match name {
            "gpt-2" | "phi-2" | "mpt" | "olmo" | "jina-es" | "jina-de" | "jina-v2-es"
            | "jina-v2-de" => Pre::Gpt2,
            "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone"
            | "minerva" => Pre::DigitsThenGpt2,
            "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "pixtral" | "dbrx" | "smaug-bpe" => {
                Pre::Llama3
            }
            "qwen2" | "deepseek-r1-qwen" | "stablelm2" => Pre::Qwen2,
            _ => return None,
        })
    }

    /// Whether BOS is added when the file does not say (llama.cpp adds it for the Llama 3 names).
    fn adds_bos(name: &str) -> bool {
        matches!(
            name,
            "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "pixtral"
        )
    }

    fn build(self) -> std::result::Result<PreTokenizerWrapper, String> {
        let split = |regex: &str| -> std::result::Result<PreTokenizerWrapper, String> {
            let split = Split::new(
                SplitPattern::Regex(regex.into()),
                SplitDelimiterBehavior::Isolated,
                false,
            )
            .map_err(|e| e.to_string())?;
            Ok(PreTokenizerWrapper::Sequence(Sequence::new(vec![
                split.into(),
                ByteLevel::new(false, true, false).into(),
            ])))
        };
        Ok(match self {
            Pre::Gpt2 => ByteLevel::new(false, true, true).into(),
            Pre::DigitsThenGpt2 => PreTokenizerWrapper::Sequence(Sequence::new(vec![
                Digits::new(true).into(),
                ByteLevel::new(false, true, true).into(),
            ])),
            Pre::Llama3 => split(LLAMA3_REGEX)?,
            Pre::Qwen2 => split(QWEN2_REGEX)?,
        })
    }
}

/// GPT-2's byte-to-character mapping, which byte-level vocabularies are written in: printable
/// Latin-1 bytes stand for themselves, the others for U+0100 onwards in byte order.
pub fn byte_chars() -> [char; 256] {
    let mut out = ['\0'; 256];
    let mut next = 256u32;
    for (b, slot) in out.iter_mut().enumerate() {
        let printable = (0x21..=0x7e).contains(&b) || (0xa1..=0xac).contains(&b) || b >= 0xae;
        let code = if printable {
            b as u32
        } else {
            next += 1;
            next - 1
        };
        *slot = char::from_u32(code).unwrap_or('\u{fffd}');
    }
    out
}

/// A GGUF file's BPE tokenizer; see the module docs.
pub struct GgufTokenizer {
    tokenizer: Tokenizer,
    bos: Option<u32>,
    eos: Option<u32>,
    add_bos: bool,
    add_eos: bool,
    vocab: usize,
}

impl std::fmt::Debug for GgufTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufTokenizer")
            .field("vocab", &self.vocab)
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .field("add_bos", &self.add_bos)
            .finish_non_exhaustive()
    }
}

impl GgufTokenizer {
    /// Builds the tokenizer of `file`, whose embedding table has `rows` rows (the vocabulary must
    /// have exactly that many tokens).
    pub fn from_gguf(file: &GgufFile, rows: usize) -> Result<GgufTokenizer> {
        let model = file.string("tokenizer.ggml.model")?.ok_or_else(|| {
            file.error(
                "has no `tokenizer.ggml.model` metadata: mpsearch tokenizes text with the tokenizer \
                 stored in the GGUF file",
            )
        })?;
        if model != "gpt2" {
            return Err(file.error(format!(
                "has a `{model}` tokenizer (tokenizer.ggml.model); mpsearch builds byte-level BPE \
                 tokenizers (`gpt2`) only, as SmolLM, Llama 3 and Qwen2 files have"
            )));
        }
        let pre_name = file.string("tokenizer.ggml.pre")?.unwrap_or("");
        let pre = Pre::named(pre_name).ok_or_else(|| {
            file.error(format!(
                "has the pre-tokenizer `{pre_name}` (tokenizer.ggml.pre), which mpsearch does not \
                 implement; it implements gpt-2, smollm (and starcoder, refact, command-r, codeshell, \
                 exaone, minerva), llama3 (llama-bpe, falcon3, pixtral, dbrx, smaug-bpe) and qwen2 \
                 (deepseek-r1-qwen, stablelm2)"
            ))
        })?;
        let tokens = file.strings("tokenizer.ggml.tokens")?.ok_or_else(|| {
            file.error("has no `tokenizer.ggml.tokens` metadata (the vocabulary)")
        })?;
        if tokens.len() != rows {
            return Err(file.tensor_error(
                "token_embd.weight",
                format!(
                    "has {rows} rows, but the vocabulary (tokenizer.ggml.tokens) has {} tokens: \
                     the tensors and the metadata disagree",
                    tokens.len()
                ),
            ));
        }
        let merges = file.strings("tokenizer.ggml.merges")?.ok_or_else(|| {
            file.error("has no `tokenizer.ggml.merges` metadata, which a BPE tokenizer needs")
        })?;
        let types = file.ints("tokenizer.ggml.token_type")?;
        if let Some(t) = &types {
            if t.len() != tokens.len() {
                return Err(file.error(format!(
                    "has {} token types (tokenizer.ggml.token_type) for {} tokens",
                    t.len(),
                    tokens.len()
                )));
            }
        }
        let mut vocab = Vocab::default();
        for (id, t) in tokens.iter().enumerate() {
            // A duplicated string keeps its first id (llama.cpp's text-to-token map does the same).
            vocab.entry((*t).to_string()).or_insert(id as u32);
        }
        let mut pairs = Vec::with_capacity(merges.len());
        for (rank, m) in merges.iter().enumerate() {
            // As llama.cpp splits a merge: at the first space after the first byte.
            let split = m
                .char_indices()
                .skip(1)
                .find(|&(_, c)| c == ' ')
                .map(|(i, _)| (m[..i].to_string(), m[i + 1..].to_string()));
            let Some(pair) = split else {
                return Err(file.error(format!(
                    "merge {rank} (tokenizer.ggml.merges) is `{m}`, not two tokens separated by a space"
                )));
            };
            pairs.push(pair);
        }
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, pairs)
            .ignore_merges(Pre::adds_bos(pre_name))
            .build()
            .map_err(|e| file.error(format!("its BPE vocabulary and merges do not fit ({e})")))?;
        let mut tokenizer = Tokenizer::new(bpe);
        tokenizer.with_pre_tokenizer(Some(pre.build().map_err(|e| {
            file.error(format!("cannot build the `{pre_name}` pre-tokenizer ({e})"))
        })?));
        tokenizer.with_decoder(Some(ByteLevelDecoder::default()));
        if let Some(types) = &types {
            let user: Vec<AddedToken> = types
                .iter()
                .zip(&tokens)
                .filter(|(&t, _)| t == USER_DEFINED)
                .map(|(_, s)| AddedToken::from(s.to_string(), false).normalized(false))
                .collect();
            tokenizer
                .add_tokens(user)
                .map_err(|e| file.error(format!("cannot add its user-defined tokens ({e})")))?;
        }
        let id = |key: &str| -> Result<Option<u32>> {
            match file.uint(key)? {
                None => Ok(None),
                Some(v) if (v as usize) < rows => Ok(Some(v as u32)),
                Some(v) => Err(file.error(format!(
                    "metadata `{key}` is {v}, outside the vocabulary of {rows} tokens"
                ))),
            }
        };
        let bos = id("tokenizer.ggml.bos_token_id")?;
        let eos = id("tokenizer.ggml.eos_token_id")?;
        let add_bos = file
            .boolean("tokenizer.ggml.add_bos_token")?
            .unwrap_or(Pre::adds_bos(pre_name));
        let add_eos = file
            .boolean("tokenizer.ggml.add_eos_token")?
            .unwrap_or(false);
        for (add, token, what) in [(add_bos, bos, "bos"), (add_eos, eos, "eos")] {
            if add && token.is_none() {
                return Err(file.error(format!(
                    "says to add a {what} token (tokenizer.ggml.add_{what}_token) but gives no \
                     tokenizer.ggml.{what}_token_id"
                )));
            }
        }
        Ok(GgufTokenizer {
            tokenizer,
            bos,
            eos,
            add_bos,
            add_eos,
            vocab: rows,
        })
    }

    /// The token ids of `text`: BOS first if the file says to add it, EOS last likewise.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let plain = self.encode_plain(text)?;
        let mut ids = Vec::with_capacity(plain.len() + 2);
        if let (true, Some(b)) = (self.add_bos, self.bos) {
            ids.push(b);
        }
        ids.extend_from_slice(&plain);
        if let (true, Some(e)) = (self.add_eos, self.eos) {
            ids.push(e);
        }
        Ok(ids)
    }

    /// The token ids of `text` alone: no BOS, no EOS (a stream to cut into windows).
    pub fn encode_plain(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| crate::Error::Data {
                name: "text".into(),
                message: format!("cannot tokenize {:?} ({e})", truncate(text)),
            })?;
        Ok(enc.get_ids().to_vec())
    }

    /// The text of `ids` (byte-level decoded; control tokens as their strings).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.tokenizer
            .decode(ids, false)
            .map_err(|e| crate::Error::Data {
                name: "tokens".into(),
                message: format!("cannot decode {} ids ({e})", ids.len()),
            })
    }

    /// The BOS id, if the file gives one.
    pub fn bos(&self) -> Option<u32> {
        self.bos
    }

    /// The EOS id, if the file gives one.
    pub fn eos(&self) -> Option<u32> {
        self.eos
    }

    /// Whether [`Self::encode`] puts BOS first.
    pub fn adds_bos(&self) -> bool {
        self.add_bos
    }

    /// Tokens in the vocabulary.
    pub fn vocab_size(&self) -> usize {
        self.vocab
    }
}

/// The start of a long text, for error messages.
fn truncate(text: &str) -> String {
    match text.char_indices().nth(60) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
    }
}
