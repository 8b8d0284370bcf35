"""A ~1B-parameter GPT-style decoder, for planning a run on hardware this machine does not have (not for training here).

    jtrain plan --config experiments/decoder_1b_plan.py --devices 8            # 8 fake CPU devices
    jtrain plan --config experiments/decoder_1b_plan.py --topology v5e:16x16   # a TPU v5e-256 slice (needs libtpu)
    jtrain inspect --config experiments/decoder_1b_plan.py --devices 8         # only the sharding table

18 blocks of width 2048 (16 heads of 128, MLP 8192), rotary positions, a 32k vocabulary and 2,048-token
sequences: 1.04B parameters. bfloat16 compute, scanned and rematerialised blocks, AdamW; the state (parameters
and both Adam moments, float32) is split over every device by FSDP.
"""

from jtrain.config import default_config


def get_config():
    config = default_config()
    config.model.name = "decoder"
    config.model.vocab_size = 32000
    config.model.num_layers = 18
    config.model.num_heads = 16
    config.model.embed_dim = 2048
    config.model.mlp_dim = 8192
    config.model.max_len = 2048
    config.model.position = "rotary"
    config.model.dtype = "bfloat16"
    config.model.scan_layers = True
    config.model.remat = True
    config.data.batch_size = 256  # sequences of 2,048 tokens per step: 0.5M tokens
    config.data.seq_len = 2048
    config.loss.name = "masked_sequence_cross_entropy"
    config.train.steps = 10000
    config.optim.name = "adamw"
    config.optim.learning_rate = 3e-4
    config.optim.weight_decay = 0.1
    config.optim.grad_clip_norm = 1.0
    config.schedule.name = "cosine"
    config.schedule.warmup_steps = 1000
    config.mesh.data = 1
    config.mesh.fsdp = -1  # every device holds 1/N of the state
    config.mesh.tensor = 1
    return config
