"""Tiny random-weight Hugging Face snapshots of the concept models, in their real classes.

Each ``write_*`` saves a model built from a tiny configuration of the official
``transformers`` architecture (``save_pretrained``: ``config.json`` +
``model.safetensors``) and its real processor (image processor + a tokenizer over a
small vocabulary of the words the tests use) into a directory, exactly the layout a
Hugging Face snapshot has, so the code under test loads them through ``from_pretrained``.
"""

from __future__ import annotations

from pathlib import Path

WORDS = ("building", "solar", "panel", "pond", "tree", "road", "car", "roof", "visual")


def _bert_tokenizer(directory: Path):
    from transformers import BertTokenizer

    directory.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", *WORDS, *"abcdefghijklmnopqrstuvwxyz"]
    path = directory / "vocab.txt"
    path.write_text("\n".join(vocab) + "\n")
    return BertTokenizer(vocab=str(path))


def _clip_tokenizer():
    """A CLIP byte-level BPE tokenizer whose merges spell the test words as single tokens."""
    from transformers import CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    chars = list(bytes_to_unicode().values())
    vocab = {c: i for i, c in enumerate(chars + [c + "</w>" for c in chars])}
    merges: dict[tuple[str, str], None] = {}
    for word in WORDS:
        parts = [*word[:-1], word[-1] + "</w>"]
        while len(parts) > 1:
            merges[(parts[0], parts[1])] = None
            parts = [parts[0] + parts[1], *parts[2:]]
            vocab.setdefault(parts[0], len(vocab))
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    # "!" pads to 16 tokens, as in OWLv2's tokenizer
    return CLIPTokenizer(vocab=vocab, merges=list(merges), pad_token="!", model_max_length=16)


def _clip_ids(tokenizer) -> dict:
    """The special token ids a CLIP text configuration must agree on with ``tokenizer``."""
    return {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id}


def write_grounding_dino(directory: Path, seed: int = 0) -> Path:
    """A tiny ``GroundingDinoForObjectDetection`` snapshot (Swin backbone, BERT text encoder)."""
    import torch
    from transformers import (
        BertConfig,
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        GroundingDinoImageProcessor,
        GroundingDinoProcessor,
        SwinConfig,
    )

    directory = Path(directory)
    tokenizer = _bert_tokenizer(directory)
    backbone = SwinConfig(
        image_size=64, patch_size=4, embed_dim=8, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1], window_size=2,
        out_features=["stage2", "stage3", "stage4"],
    )
    text = BertConfig(
        vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=64,
    )
    config = GroundingDinoConfig(
        backbone_config=backbone, text_config=text, d_model=32, encoder_layers=1, decoder_layers=2,
        encoder_ffn_dim=32, decoder_ffn_dim=32, encoder_attention_heads=2, decoder_attention_heads=2,
        num_queries=12, num_feature_levels=3, encoder_n_points=2, decoder_n_points=2, max_text_len=32,
    )
    torch.manual_seed(seed)
    model = GroundingDinoForObjectDetection(config).eval()
    image_processor = GroundingDinoImageProcessor(size={"shortest_edge": 64, "longest_edge": 96})
    GroundingDinoProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(directory)
    model.save_pretrained(directory)
    return directory


def write_owlv2(directory: Path, seed: int = 0) -> Path:
    """A tiny ``Owlv2ForObjectDetection`` snapshot (ViT 64 px, patch 16, CLIP text encoder)."""
    import torch
    from transformers import Owlv2Config, Owlv2ForObjectDetection, Owlv2ImageProcessor, Owlv2Processor

    directory = Path(directory)
    tokenizer = _clip_tokenizer()
    config = Owlv2Config(
        text_config={"vocab_size": len(tokenizer), "hidden_size": 16, "intermediate_size": 32,
                     "num_hidden_layers": 1, "num_attention_heads": 2, "max_position_embeddings": 16,
                     **_clip_ids(tokenizer)},
        vision_config={"image_size": 64, "patch_size": 16, "hidden_size": 16, "intermediate_size": 32,
                       "num_hidden_layers": 1, "num_attention_heads": 2},
        projection_dim=16,
    )
    torch.manual_seed(seed)
    model = Owlv2ForObjectDetection(config).eval()
    image_processor = Owlv2ImageProcessor(size={"height": 64, "width": 64})
    Owlv2Processor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(directory)
    model.save_pretrained(directory)
    return directory


def write_sam3(directory: Path, seed: int = 0) -> Path:
    """A tiny ``Sam3Model`` snapshot (ViT 56 px, patch 14, one layer per module, CLIP text)."""
    import torch
    from transformers import Sam3Config, Sam3ImageProcessor, Sam3Model, Sam3Processor

    directory = Path(directory)
    tokenizer = _clip_tokenizer()
    hidden = 32
    small = {"hidden_size": hidden, "num_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}
    config = Sam3Config(
        vision_config={
            "backbone_config": {
                "model_type": "sam3_vit_model",
                "hidden_size": hidden, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                "image_size": 56, "patch_size": 14, "window_size": 2, "global_attn_indexes": [1],
                "pretrain_image_size": 56,
            },
            "fpn_hidden_size": hidden,
            "backbone_feature_sizes": [[16, 16], [8, 8], [4, 4]],
        },
        text_config={
            "vocab_size": len(tokenizer), "hidden_size": hidden, "intermediate_size": 64, "projection_dim": 16,
            "num_hidden_layers": 1, "num_attention_heads": 2, "max_position_embeddings": 32, **_clip_ids(tokenizer),
        },
        geometry_encoder_config={**small, "roi_size": 2},
        detr_encoder_config=small,
        detr_decoder_config={**small, "num_queries": 6},
        mask_decoder_config={"hidden_size": hidden, "num_attention_heads": 2, "num_upsampling_stages": 2},
    )
    torch.manual_seed(seed)
    model = Sam3Model(config).eval()
    image_processor = Sam3ImageProcessor(size={"height": 56, "width": 56}, mask_size={"height": 16, "width": 16})
    Sam3Processor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(directory)
    model.save_pretrained(directory)
    return directory
