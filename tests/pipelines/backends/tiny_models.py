"""Tiny, randomly initialised stand-ins for the standard backends' weights, built on the fly.

Each builder writes into a folder, in the format the real weights come in, and returns its path,
so the backends load them through exactly the code paths a user's downloaded weights take:

- :func:`build_tiny_pyannote_pipeline`: a pyannote.audio 4 speaker-diarization pipeline laid out
  like ``pyannote/speaker-diarization-community-1`` (``config.yaml`` naming ``$model/segmentation``,
  ``$model/embedding``, ``$model/plda``; VBx clustering), for ``Pipeline.from_pretrained(dir)``;
- :func:`build_tiny_whisper`: a CTranslate2 Whisper folder (faster-whisper format) converted from a
  random ``WhisperForConditionalGeneration`` with a locally trained byte-level BPE tokenizer and
  the full multilingual special-token layout, for ``whisperx.load_model(dir)``;
- :func:`build_tiny_align`: a Hugging Face ``Wav2Vec2ForCTC`` + ``Wav2Vec2Processor`` folder with a
  character vocabulary, for ``whisperx.load_align_model(model_name=dir)``;
- :func:`build_tiny_punkt`: an NLTK data root with a small English ``punkt_tab`` model;
- :func:`build_tiny_model_dir`: all of the above in the ``--model-dir`` layout of
  :mod:`microturn.pipelines.backends.model_dir`.

The same seed gives the same weights (torch's global generator is forked, not disturbed). Each
builder takes a second or two on a laptop core, most of it imports.
"""

from __future__ import annotations

import itertools
import json
import os
import string
import tempfile
from pathlib import Path

SEED = 0

# A little English text: the BPE merges of the tiny Whisper tokenizer are learned from it.
BPE_CORPUS = (
    "hello? oh, hello. i didn't know you were there. neither did i. "
    "the quick brown fox jumps over the lazy dog. we talk and listen at the same time, "
    "don't we? yes, and we answer in short turns: two hundred milliseconds at a time. "
    "so what do you think about it? i think it is quite good, but let me hear the rest first."
)

# Regular (text) tokens of the multilingual Whisper vocabulary: ids 0..50256. CTranslate2 calls a
# Whisper model multilingual when its vocabulary holds the empty token "" (id 50256 in OpenAI's
# multilingual vocabulary) and counts languages as id(<|nospeech|>) - id(<|startoftranscript|>) - 5,
# so the layout below is the real one, special tokens included.
N_TEXT_TOKENS = 50_257
N_TIMESTAMPS = 1_501  # <|0.00|> .. <|30.00|> in 20 ms steps


def _whisper_languages() -> list[str]:
    """Language codes in Whisper's token order (whisperx keeps OpenAI's table, 100 with yue)."""
    from faster_whisper.tokenizer import _LANGUAGE_CODES
    from whisperx.utils import LANGUAGES

    codes = list(LANGUAGES)
    missing = set(_LANGUAGE_CODES) - set(codes)
    if missing:  # faster-whisper may look any of its codes up; every one needs its token
        raise RuntimeError(f"whisperx's language table lacks {sorted(missing)}")
    return codes


def _save_pyannote_checkpoint(model, path: Path) -> None:
    """Write ``model`` as the PyTorch Lightning checkpoint ``Model.from_pretrained`` reads.

    Lightning's own checkpoint holds these keys; ``Model.on_save_checkpoint`` adds the
    ``pyannote.audio`` entry (versions, architecture module/class, specifications).
    """
    import lightning
    import torch

    checkpoint = {
        "pytorch-lightning_version": lightning.__version__,
        "epoch": 0,
        "global_step": 0,
        "state_dict": model.state_dict(),
        "hyper_parameters": dict(model.hparams),
    }
    model.on_save_checkpoint(checkpoint)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, path)


def build_tiny_pyannote_pipeline(
    out_dir: str | os.PathLike[str],
    *,
    seed: int = SEED,
    chunk_s: float = 5.0,
    embedding_dim: int = 32,
    plda_dim: int = 16,
) -> Path:
    """A tiny pyannote speaker-diarization pipeline in ``out_dir``; returns ``out_dir``.

    - segmentation: ``PyanNet`` (SincNet, one 16-unit BiLSTM, one 16-unit linear layer), powerset
      over 3 local speakers with at most 2 at once, as ``pyannote/segmentation-3.0``; ``chunk_s``
      second windows (5 s rather than 10 s halves the work);
    - embedding: ``XVectorSincNet`` with ``embedding_dim`` outputs (WeSpeakerResNet34, the
      community pipeline's, has a fixed 6.6M-parameter trunk: 3x slower here);
    - PLDA for VBx: a random orthonormal LDA to ``plda_dim`` dimensions and a random PLDA;
    - ``config.yaml``: ``SpeakerDiarization`` with VBx clustering and the community pipeline's
      parameters (threshold 0.6, Fa 0.07, Fb 0.8), windows every half chunk (the real 0.1 would
      embed 5x more windows for nothing here).
    """
    import numpy as np
    import torch
    import yaml
    from pyannote.audio.core.task import Problem, Resolution, Specifications
    from pyannote.audio.models.embedding import XVectorSincNet
    from pyannote.audio.models.segmentation import PyanNet

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        segmentation = PyanNet(
            sincnet={"stride": 10},
            lstm={"hidden_size": 16, "num_layers": 1, "bidirectional": True},
            linear={"hidden_size": 16, "num_layers": 1},
        )
        segmentation.specifications = Specifications(
            problem=Problem.MONO_LABEL_CLASSIFICATION,
            resolution=Resolution.FRAME,
            duration=chunk_s,
            min_duration=chunk_s,
            warm_up=(0.0, 0.0),
            classes=["speaker#1", "speaker#2", "speaker#3"],
            powerset_max_classes=2,
            permutation_invariant=True,
        )
        segmentation.build()  # the task-dependent classifier, as Model.setup() adds it on load
        embedding = XVectorSincNet(sincnet={"stride": 10}, dimension=embedding_dim)
        embedding.specifications = Specifications(
            problem=Problem.REPRESENTATION, resolution=Resolution.CHUNK, duration=chunk_s
        )
    _save_pyannote_checkpoint(segmentation, out / "segmentation" / "pytorch_model.bin")
    _save_pyannote_checkpoint(embedding, out / "embedding" / "pytorch_model.bin")

    rng = np.random.default_rng(seed)
    lda, _ = np.linalg.qr(rng.standard_normal((embedding_dim, embedding_dim)))
    plda_tr, _ = np.linalg.qr(rng.standard_normal((plda_dim, plda_dim)))
    (out / "plda").mkdir(exist_ok=True)
    np.savez(
        out / "plda" / "xvec_transform.npz",
        mean1=0.01 * rng.standard_normal(embedding_dim),
        mean2=0.01 * rng.standard_normal(plda_dim),
        lda=lda[:, :plda_dim],
    )
    # psi: between-class variances, positive and decreasing as in a trained PLDA.
    np.savez(
        out / "plda" / "plda.npz",
        mu=np.zeros(plda_dim),
        tr=plda_tr,
        psi=np.sort(rng.uniform(0.5, 5.0, plda_dim))[::-1].copy(),
    )

    from pyannote.audio import __version__ as pyannote_version

    config = {
        "dependencies": {"pyannote.audio": pyannote_version},
        "pipeline": {
            "name": "pyannote.audio.pipelines.SpeakerDiarization",
            "params": {
                "segmentation": "$model/segmentation",
                "segmentation_step": 0.5,
                "embedding": "$model/embedding",
                "embedding_exclude_overlap": True,
                "plda": "$model/plda",
                "clustering": "VBxClustering",
                "segmentation_batch_size": 8,
                "embedding_batch_size": 8,
            },
        },
        "params": {
            "segmentation": {"min_duration_off": 0.0},
            "clustering": {"threshold": 0.6, "Fa": 0.07, "Fb": 0.8},
        },
    }
    with open(out / "config.yaml", "w", encoding="utf-8") as f:
        yaml.safe_dump(config, f, sort_keys=False)
    return out


def _whisper_tokenizer():
    """A byte-level BPE tokenizer with Whisper's multilingual vocabulary layout.

    Merges come from :data:`BPE_CORPUS`; the rest of the 50,257 text slots are filled with
    " xxxx" pseudo-words (never produced by the merges, but a random model emits them, and they
    decode to lowercase words the character aligner can place), then the empty token, then the
    special tokens and timestamps in OpenAI's order.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

    def byte_level(tok: Tokenizer) -> Tokenizer:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        return tok

    trainer_tok = byte_level(Tokenizer(models.BPE()))
    trainer = trainers.BpeTrainer(
        vocab_size=2_000,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    trainer_tok.train_from_iterator(BPE_CORPUS.split(". "), trainer)
    learned = json.loads(trainer_tok.to_str())["model"]
    vocab: dict[str, int] = dict(learned["vocab"])
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in learned["merges"]]
    for letters in itertools.product(string.ascii_lowercase, repeat=4):
        if len(vocab) >= N_TEXT_TOKENS - 1:
            break
        word = "\u0120" + "".join(letters)  # "Ġ" is byte-level BPE's leading space
        vocab.setdefault(word, len(vocab))
    vocab[""] = len(vocab)  # id 50256: CTranslate2's multilingual marker
    assert len(vocab) == N_TEXT_TOKENS

    tok = byte_level(Tokenizer(models.BPE(vocab=vocab, merges=merges)))
    specials = (
        ["<|endoftext|>", "<|startoftranscript|>"]
        + [f"<|{code}|>" for code in _whisper_languages()]
        + ["<|translate|>", "<|transcribe|>", "<|startoflm|>", "<|startofprev|>",
           "<|nospeech|>", "<|notimestamps|>"]
    )
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
    tok.add_tokens(
        [AddedToken(f"<|{i * 0.02:.2f}|>", special=False, normalized=False) for i in range(N_TIMESTAMPS)]
    )
    return tok, specials


def _stop_after(model, *, eot: int, prompt_len: int, n_tokens: int, seed: int) -> None:
    """Make a random Whisper decoder emit ``<|endoftext|>`` after ``n_tokens`` text tokens.

    A purely random decoder rarely ends: faster-whisper then decodes 224 tokens per 30 s window,
    too many characters for the aligner to place (1 per 20 ms frame). So one direction ``u`` of
    the residual stream is reserved for "stop": it is projected out of every embedding and of
    every block's output, ``<|endoftext|>``'s (tied) embedding is ``4 u`` and the final layer norm
    gets a bias of ``-2 u``. Before position ``prompt_len - 1 + n_tokens`` the stream has no ``u``
    component, so the end-of-text logit is exactly -8 against ~N(0, 0.2) for the other tokens;
    from there on the positional embeddings carry ``50 u``, the normalised stream is ~8 ``u`` and
    the end-of-text logit is ~+24. Everything else stays random.
    """
    import torch

    decoder = model.model.decoder
    d = decoder.embed_tokens.weight.shape[1]
    gen = torch.Generator().manual_seed(seed + 1)
    u = torch.randn(d, generator=gen)
    u -= u.mean()  # orthogonal to the all-ones vector, so layer norm's centring keeps u out
    u /= u.norm()
    project = torch.eye(d) - torch.outer(u, u)
    with torch.no_grad():
        decoder.embed_tokens.weight.copy_(decoder.embed_tokens.weight @ project)
        decoder.embed_positions.weight.copy_(decoder.embed_positions.weight @ project)
        for layer in decoder.layers:
            for linear in (layer.self_attn.out_proj, layer.encoder_attn.out_proj, layer.fc2):
                linear.weight.copy_(project @ linear.weight)
                if linear.bias is not None:
                    linear.bias.copy_(project @ linear.bias)
        decoder.embed_tokens.weight[eot] = 4.0 * u
        decoder.layer_norm.bias.copy_(decoder.layer_norm.bias @ project - 2.0 * u)
        decoder.embed_positions.weight[prompt_len - 1 + n_tokens :] += 50.0 * u


def build_tiny_whisper(
    out_dir: str | os.PathLike[str],
    *,
    seed: int = SEED,
    stop_after_tokens: int | None = 12,
) -> Path:
    """A tiny CTranslate2 Whisper folder in ``out_dir`` (faster-whisper format); returns it.

    A random ``WhisperForConditionalGeneration`` (d_model 64, one encoder and one decoder layer,
    2 heads, 80 mel bins, the 51,866-token multilingual vocabulary of large-v3) is saved with its
    tokenizer and generation config (language and task ids, suppressed tokens) to a scratch
    Hugging Face folder, converted with ``ctranslate2.converters.TransformersConverter``, and
    ``tokenizer.json`` and ``preprocessor_config.json`` are copied beside ``model.bin``.
    ``stop_after_tokens`` (None: purely random) makes it end each window after that many tokens,
    see :func:`_stop_after`.
    """
    import torch
    from ctranslate2.converters import TransformersConverter
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperTokenizerFast,
    )

    tok, specials = _whisper_tokenizer()
    ids = {s: tok.token_to_id(s) for s in specials}
    eot, sot = ids["<|endoftext|>"], ids["<|startoftranscript|>"]
    space = tok.token_to_id("\u0120")
    languages = _whisper_languages()
    config = WhisperConfig(
        vocab_size=tok.get_vocab_size(),
        num_mel_bins=80,
        d_model=64,
        encoder_layers=1,
        encoder_attention_heads=2,
        decoder_layers=1,
        decoder_attention_heads=2,
        encoder_ffn_dim=128,
        decoder_ffn_dim=128,
        max_source_positions=1500,  # 30 s of 10 ms frames, halved by the stride-2 convolution
        max_target_positions=448,
        pad_token_id=eot,
        bos_token_id=eot,
        eos_token_id=eot,
        decoder_start_token_id=sot,
        begin_suppress_tokens=None,  # these live in the generation config
        suppress_tokens=None,
    )
    generation = GenerationConfig(
        decoder_start_token_id=sot,
        bos_token_id=eot,
        eos_token_id=eot,
        pad_token_id=eot,
        max_length=448,
        suppress_tokens=[],
        begin_suppress_tokens=[space, eot],
        lang_to_id={f"<|{c}|>": ids[f"<|{c}|>"] for c in languages},
        task_to_id={"transcribe": ids["<|transcribe|>"], "translate": ids["<|translate|>"]},
        no_timestamps_token_id=ids["<|notimestamps|>"],
        is_multilingual=True,
        alignment_heads=[[0, 0], [0, 1]],
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = WhisperForConditionalGeneration(config).eval()
    if stop_after_tokens is not None:
        # whisperx's prompt: <|startoftranscript|> <|lang|> <|transcribe|> <|notimestamps|>
        _stop_after(model, eot=eot, prompt_len=4, n_tokens=stop_after_tokens, seed=seed)
    model.generation_config = generation

    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="tiny-whisper-hf-") as hf_dir:
        WhisperTokenizerFast(
            tokenizer_object=tok,
            unk_token="<|endoftext|>",
            bos_token="<|endoftext|>",
            eos_token="<|endoftext|>",
            additional_special_tokens=specials[1:],
        ).save_pretrained(hf_dir)
        model.save_pretrained(hf_dir)
        WhisperFeatureExtractor(feature_size=80).save_pretrained(hf_dir)
        TransformersConverter(
            hf_dir, copy_files=["tokenizer.json", "preprocessor_config.json"]
        ).convert(str(out), force=True)
    return out


# Character vocabulary of an English CTC aligner: CTC blank <pad> first, "|" between words.
ALIGN_VOCAB = ["<pad>", "<s>", "</s>", "<unk>", "|", "'", *string.ascii_lowercase]


def build_tiny_align(out_dir: str | os.PathLike[str], *, seed: int = SEED) -> Path:
    """A tiny Hugging Face ``Wav2Vec2ForCTC`` + ``Wav2Vec2Processor`` folder; returns it.

    The convolutional front end keeps wav2vec2's strides (320 samples: 50 frames per second, the
    resolution whisperx's aligner works at) with 32 channels instead of 512; one transformer
    layer of width 32 follows.
    """
    import torch
    from transformers import (
        Wav2Vec2Config,
        Wav2Vec2CTCTokenizer,
        Wav2Vec2FeatureExtractor,
        Wav2Vec2ForCTC,
        Wav2Vec2Processor,
    )

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="tiny-align-vocab-") as scratch:
        vocab_file = Path(scratch) / "vocab.json"
        vocab_file.write_text(json.dumps({c: i for i, c in enumerate(ALIGN_VOCAB)}), encoding="utf-8")
        tokenizer = Wav2Vec2CTCTokenizer(
            str(vocab_file),
            unk_token="<unk>",
            pad_token="<pad>",
            bos_token="<s>",
            eos_token="</s>",
            word_delimiter_token="|",
            do_lower_case=False,
        )
    features = Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=16_000, padding_value=0.0, do_normalize=True,
        return_attention_mask=False,
    )
    Wav2Vec2Processor(feature_extractor=features, tokenizer=tokenizer).save_pretrained(out)
    config = Wav2Vec2Config(
        vocab_size=len(ALIGN_VOCAB),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=(32,) * 7,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4,
        pad_token_id=0,
        feat_extract_norm="group",
        do_stable_layer_norm=False,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Wav2Vec2ForCTC(config).eval()
    model.save_pretrained(out)
    return out


# A small English punkt model: abbreviations that take a period inside a sentence, words that
# start sentences, and orthographic context (punkt's bit field: 2 = seen upper-case at a sentence
# start, 4 = upper-case mid-sentence, 32 = lower-case mid-sentence).
_PUNKT_ABBREVIATIONS = ("dr", "mr", "mrs", "ms", "prof", "st", "etc", "e.g", "i.e", "vs")
_PUNKT_SENT_STARTERS = ("the", "but", "and", "so", "i", "we", "yes", "no", "oh", "well")
_PUNKT_ORTHO_CONTEXT = (("i", 2 | 4), ("hello", 2 | 32), ("smith", 4))


def build_tiny_punkt(out_dir: str | os.PathLike[str]) -> Path:
    """An NLTK data root with ``tokenizers/punkt_tab/english/``; returns the root.

    The four plain-text files are the ones ``nltk.tokenize.punkt.load_punkt_params`` reads:
    one tuple per line, tab-separated (``collocations.tab``, ``ortho_context.tab``) or one
    entry per line (``sent_starters.txt``, ``abbrev_types.txt``).
    """
    root = Path(out_dir)
    lang_dir = root / "tokenizers" / "punkt_tab" / "english"
    lang_dir.mkdir(parents=True, exist_ok=True)
    (lang_dir / "collocations.tab").write_text("", encoding="utf-8")
    (lang_dir / "abbrev_types.txt").write_text("\n".join(_PUNKT_ABBREVIATIONS), encoding="utf-8")
    (lang_dir / "sent_starters.txt").write_text("\n".join(_PUNKT_SENT_STARTERS), encoding="utf-8")
    (lang_dir / "ortho_context.tab").write_text(
        "\n".join(f"{word}\t{flags}" for word, flags in _PUNKT_ORTHO_CONTEXT), encoding="utf-8"
    )
    return root


def build_tiny_model_dir(
    out_dir: str | os.PathLike[str], *, seed: int = SEED, language: str = "en"
) -> Path:
    """Every tiny model in the ``--model-dir`` layout under ``out_dir``; returns ``out_dir``.

    The punkt model is English; whisperx falls back to it for languages without their own.
    """
    from microturn.pipelines.backends.model_dir import (
        NLTK_SUBDIR,
        PYANNOTE_SUBDIR,
        WHISPER_SUBDIR,
        align_subdir,
    )

    root = Path(out_dir)
    build_tiny_pyannote_pipeline(root / PYANNOTE_SUBDIR, seed=seed)
    build_tiny_whisper(root / WHISPER_SUBDIR, seed=seed)
    build_tiny_align(root / align_subdir(language), seed=seed)
    build_tiny_punkt(root / NLTK_SUBDIR)
    return root
