"""The allowed values of the config's choice keys, defined once.

The validation (:mod:`emdqn.config.checks`) and the parts that act on a value (networks, memory,
envs, the update) import them from here; this module imports nothing, so checking a
config stays fast.
"""

ENV_KINDS = ("atari", "minatar", "classic", "toy_text")
MINATAR_GAMES = ("asterix", "breakout", "freeway", "seaquest", "space_invaders")
MINATAR_ACTION_SETS = ("full", "minimal")      # -v0 (6 actions, published results), -v1
ATARI_FRAMES = ("original", "resize")          # the original code's cropped frame, or the whole screen
MODEL_NAMES = ("nature_cnn", "minatar_cnn", "mlp")
IMAGE_MODELS = {"nature_cnn": "atari", "minatar_cnn": "minatar"}  # model -> the env kind it is built for
PADDINGS = ("same", "valid")                   # nature_cnn: the original TF layout, or 'valid'
LOSSES = ("huber", "mse")
MATCH_MODES = ("exact", "knn")
MEMORY_AVERAGES = ("batch", "hits")            # the memory term's mean: over the batch (original) or the hits
PRECISIONS = ("32-true", "bf16-mixed")         # trainer.precision values the loss and clipping are correct under
