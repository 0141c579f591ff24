from .baft_hparams import ALG_NAME, BaFTHyperParams, HParamsError

__all__ = ["ALG_NAME", "BaFTHyperParams", "HParamsError"]
