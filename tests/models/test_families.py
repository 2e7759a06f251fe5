import pytest

from humantune.errors import HumantuneError
from humantune.models.families import FAMILIES, family_of
from tests.tiny_pipelines import build_pipeline


@pytest.mark.parametrize("name", ["sd", "sd3"])
def test_the_family_table_names_components_the_pipelines_have(name):
    pipe = build_pipeline(name)
    family = family_of(pipe)
    assert family is FAMILIES[name] and family_of(type(pipe)) is family
    for component in (family.denoiser,) + family.text_encoders + family.tokenizers:
        assert pipe.components[component] is not None, component
    assert family.trainable == (family.denoiser,) + family.text_encoders


def test_an_unknown_pipeline_class_is_a_one_line_error():
    class FluxPipeline:
        pass

    with pytest.raises(HumantuneError, match="base_model 'x' is a FluxPipeline; expected one of StableDiffusionPipeline"):
        family_of(FluxPipeline(), "base_model 'x'")
