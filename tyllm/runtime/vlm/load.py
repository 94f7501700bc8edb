"""Opening a VLM tree (its files already checked by `runtime.load`): language and vision
programs placed on their dies."""

from tyllm.runtime.vlm.runners import LanguageRunner, VisionRunner
from tyllm.runtime.vlm.session import VlmSession


def load_vlm(tree, workers_cls) -> VlmSession:
    language = workers_cls(tree, LanguageRunner, tree.config["language_die_remap"])
    try:
        vision = workers_cls(tree, VisionRunner, tree.config["vision"]["die_remap"])
    except BaseException:
        language.close()
        raise
    return VlmSession(tree, language, vision)
