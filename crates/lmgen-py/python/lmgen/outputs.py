"""transformers' generate() output classes (`GenerateDecoderOnlyOutput`,
`GenerateBeamDecoderOnlyOutput`, and their encoder-decoder twins): attribute and key access, and
tuple order over the fields that are set, as `ModelOutput`."""


class ModelOutput:
    _fields = ()

    def __init__(self, **kwargs):
        for name in self._fields:
            setattr(self, name, kwargs.pop(name, None))
        if kwargs:
            raise TypeError(f"unexpected fields {sorted(kwargs)}")

    def keys(self):
        return [n for n in self._fields if getattr(self, n) is not None]

    def __getitem__(self, key):
        if isinstance(key, str):
            return getattr(self, key)
        return self.to_tuple()[key]

    def __contains__(self, key):
        return key in self.keys()

    def __iter__(self):
        return iter(self.keys())

    def items(self):
        return [(k, getattr(self, k)) for k in self.keys()]

    def to_tuple(self):
        return tuple(getattr(self, k) for k in self.keys())

    def __repr__(self):
        fields = ", ".join(f"{k}=..." for k in self.keys())
        return f"{type(self).__name__}({fields})"


class GenerateDecoderOnlyOutput(ModelOutput):
    """Greedy search, sampling, assisted decoding."""

    _fields = ("sequences", "scores", "logits", "attentions", "hidden_states", "past_key_values")


class GenerateBeamDecoderOnlyOutput(ModelOutput):
    """Beam search and beam sampling."""

    _fields = (
        "sequences",
        "sequences_scores",
        "scores",
        "logits",
        "beam_indices",
        "attentions",
        "hidden_states",
        "past_key_values",
    )


class GenerateEncoderDecoderOutput(ModelOutput):
    """Greedy search and sampling of an encoder-decoder model."""

    _fields = (
        "sequences",
        "scores",
        "logits",
        "encoder_attentions",
        "encoder_hidden_states",
        "decoder_attentions",
        "cross_attentions",
        "decoder_hidden_states",
        "past_key_values",
    )


class GenerateBeamEncoderDecoderOutput(ModelOutput):
    """Beam search of an encoder-decoder model."""

    _fields = (
        "sequences",
        "sequences_scores",
        "scores",
        "logits",
        "beam_indices",
        "encoder_attentions",
        "encoder_hidden_states",
        "decoder_attentions",
        "cross_attentions",
        "decoder_hidden_states",
        "past_key_values",
    )
