"""Tiny tokenizers and random-weight models for tests: built in code, nothing downloaded."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
import transformers as T
from tokenizers import ByteLevelBPETokenizer, SentencePieceBPETokenizer
from tokenizers.processors import TemplateProcessing

CORPUS = [
    "The Eiffel Tower is located in the city of Paris.",
    "Danielle Darrieux spoke the language of French and English.",
    "Toko Yasuda plays the guitar and the piano.",
    "Rome is the capital of Italy. Berlin is the capital of Germany.",
    "Michael Jordan plays the sport of basketball, not baseball.",
    "The mother tongue of the actor is Dutch, Spanish or English.",
] * 20


def make_tokenizer(kind: str = "bpe", bos: bool = False) -> T.PreTrainedTokenizerFast:
    """Byte-level BPE (GPT-2 style), SentencePiece-style BPE (Llama style), or "ws": a tokenizer that
    drops spaces altogether (whitespace pre-tokenizer); optionally with BOS."""
    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    if kind == "bpe":
        raw = ByteLevelBPETokenizer()
    elif kind == "ws":
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        raw = Tokenizer(models.BPE(unk_token="<unk>"))
        raw.pre_tokenizer = pre_tokenizers.Whitespace()
        raw.decoder = decoders.BPEDecoder()
        raw.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=300, special_tokens=specials))
        if bos:
            raw.post_processor = TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
        return T.PreTrainedTokenizerFast(tokenizer_object=raw, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                         unk_token="<unk>")
    else:
        raw = SentencePieceBPETokenizer()
    raw.train_from_iterator(CORPUS, vocab_size=300, min_frequency=1, special_tokens=specials)
    if bos:
        raw.post_processor = TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tok = T.PreTrainedTokenizerFast(tokenizer_object=raw, pad_token="<pad>", bos_token="<s>", eos_token="</s>")
    return tok


def config_for(model_type: str, vocab: int, **kw):
    common = {"vocab_size": vocab, "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}
    if model_type == "gpt2":
        return T.GPT2Config(n_embd=32, n_layer=4, n_head=4, n_positions=128, **common, **kw)
    if model_type == "gptj":
        return T.GPTJConfig(n_embd=32, n_layer=4, n_head=4, n_positions=128, rotary_dim=4, **common, **kw)
    if model_type == "gpt_neox":
        return T.GPTNeoXConfig(hidden_size=32, num_hidden_layers=4, num_attention_heads=4, intermediate_size=64,
                               max_position_embeddings=128, **common, **kw)
    cls = {"llama": T.LlamaConfig, "mistral": T.MistralConfig, "qwen2": T.Qwen2Config, "gemma": T.GemmaConfig,
           "gemma2": T.Gemma2Config, "gemma3_text": T.Gemma3TextConfig}[model_type]
    extra = {"head_dim": 8} if model_type.startswith("gemma") else {}
    return cls(hidden_size=32, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
               intermediate_size=64, max_position_embeddings=128, **extra, **common, **kw)


ALL_TYPES = ["gpt2", "gptj", "gpt_neox", "llama", "mistral", "qwen2", "gemma", "gemma2", "gemma3_text"]


def tiny_model(model_type: str, tokenizer, dtype=torch.float32, seed: int = 0):
    torch.manual_seed(seed)
    model = T.AutoModelForCausalLM.from_config(config_for(model_type, len(tokenizer)))
    model.to(dtype).eval().requires_grad_(False)
    return model


def benchmark_script(name: str):
    """A script of benchmarks/ loaded as a module (they are scripts, not a package)."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
