import warnings

# peft 0.21 reads transformers 5's deprecated `is_gradient_checkpointing` alias whenever it wraps a
# model (PeftModel.__init__), so every LoRA job logged a FutureWarning that no change of ours can
# remove; only that message is silenced.
warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
