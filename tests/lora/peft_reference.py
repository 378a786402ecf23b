"""Loading our exported adapters with the real PEFT, for the tests that hold us to it."""

import warnings


def peft_from_pretrained(torch_model, adapter_dir):
    """`peft.PeftModel.from_pretrained(torch_model, adapter_dir)` in eval mode. peft 0.21 reads
    `model.is_gradient_checkpointing`, which transformers 5 deprecates with a FutureWarning on
    every load; neither our code nor the test can act on it, so it is silenced here only."""
    from peft import PeftModel

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated",
                                category=FutureWarning)
        return PeftModel.from_pretrained(torch_model, str(adapter_dir)).eval()
