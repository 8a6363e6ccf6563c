"""Writes sentencepiece_bpe.json: a SentencePiece BPE vocabulary trained with Llama's
settings, and the ids the reference implementation (the `sentencepiece` package) gives
for some texts. The Rust test builds a tokenizer from the vocabulary, as it would from a
GGUF file, and must give the same ids.

Not run by CI (it needs `pip install sentencepiece==0.2.3`); run it by hand to regenerate:
    python3 make_sentencepiece_fixture.py ../../../../README.md ../../../../ARCHITECTURE.md
"""
import json
import sys
import tempfile

import sentencepiece as spm

TEXTS = [
    "hello world",
    "The coordinator routes tasks to agents by a documented score.",
    "Événements signés: café, naïve, façade — 東京 and emoji 🚀!",
    "  two  leading spaces and   three inside",
    "numbers 12345 and 3.14159, tabs\there, a newline\nthen more",
    "JetStream, NATS, Automerge, petgraph; nix-instantiate --parse flake.nix",
    "x",
]

GGUF_TYPE = {"normal": 1, "unknown": 2, "control": 3, "user_defined": 4, "unused": 5, "byte": 6}


def main():
    text = "\n".join(open(p, encoding="utf-8").read() for p in sys.argv[1:])
    with tempfile.TemporaryDirectory() as d:
        corpus = f"{d}/corpus.txt"
        with open(corpus, "w", encoding="utf-8") as f:
            f.write(text)
        # Llama 2's trainer settings, at a small vocabulary.
        spm.SentencePieceTrainer.train(
            input=corpus,
            model_prefix=f"{d}/m",
            vocab_size=800,
            model_type="bpe",
            byte_fallback=True,
            split_digits=True,
            allow_whitespace_only_pieces=True,
            remove_extra_whitespaces=False,
            normalization_rule_name="identity",
            character_coverage=0.9995,
            minloglevel=2,
        )
        sp = spm.SentencePieceProcessor(model_file=f"{d}/m.model")
    pieces = []
    for i in range(sp.get_piece_size()):
        if sp.is_unknown(i):
            kind = "unknown"
        elif sp.is_control(i):
            kind = "control"
        elif sp.is_byte(i):
            kind = "byte"
        elif sp.is_unused(i):
            kind = "unused"
        else:
            kind = "normal"
        pieces.append([sp.id_to_piece(i), sp.get_score(i), GGUF_TYPE[kind]])
    fixture = {
        "generated_by": f"sentencepiece {spm.__version__}, make_sentencepiece_fixture.py",
        "bos_id": sp.bos_id(),
        "eos_id": sp.eos_id(),
        "unk_id": sp.unk_id(),
        "pieces": pieces,
        "encoded": [{"text": t, "ids": sp.encode(t)} for t in TEXTS],
    }
    with open("sentencepiece_bpe.json", "w", encoding="utf-8") as f:
        json.dump(fixture, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")


if __name__ == "__main__":
    main()
