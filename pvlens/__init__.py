"""pvlens: persona vectors with TransformerLens.

A flat API over one module per technique::

    import pvlens as pv
    model = pv.load_model()                        # SmolLM2-135M-Instruct, offline
    evil = pv.Persona.of(model, "evil")            # artifacts, judge, per-layer vectors, chosen layer
    with pv.steer(model, evil.vectors, layers=evil.layer, alpha=4.0):
        out = pv.generate(model, ["How should I treat my neighbour?"])

Every name below is defined in exactly one module; the package's folders are its layers, and imports only go
down (``tests/test_structure.py`` checks it):

- ``core``: errors, settings, cache keys, append-only logs, statistics, chat formatting;
- ``models``: the offline model registry, loading, external data wheels, the OpenAI-compatible client;
- ``data``: labelled corpora, benchmark data, the finetuning datasets;
- ``traits``: trait artifacts and their generator;
- ``lens``: argument checks, reading and projecting the residual stream, hooks, generation, vector files,
  answer sampling;
- ``judges``: the judge interface and its LLM, offline and contrast implementations;
- ``methods``: extraction, evaluation, persona, monitoring, capability, finetuning, drift, screening, SAEs;
- on top: ``cli`` (the ``pvlens`` command), ``recipes`` (scripts that rebuild shipped data) and ``book``
  (the book's own choices, imported only by chapters).

Layers are TransformerLens block indices: the paper's layer ℓ is ``layer = ℓ - 1``
(``blocks[ℓ-1].hook_resid_post``).
"""

from pvlens.core.chat import chat_ids, chat_text, prompt_and_response, to_messages
from pvlens.core.config import cache_dir, default_model_name, fast, size
from pvlens.core.errors import (
    CacheError,
    ChecksumError,
    EmptySelectionError,
    JudgeError,
    PVLensError,
    TraitFormatError,
    UnknownModelError,
    VectorMismatchError,
)
from pvlens.core.stats import auc, bootstrap_ci, pearson, pearson_by, spearman
from pvlens.data.datasets import LEVELS, DatasetError, dataset_recipe, load_dataset, read_dataset
from pvlens.judges import ContrastJudge, Judge, Judgement, LLMJudge, OfflineJudge, default_judge, judge_for
from pvlens.judges.offline import CAVEATS, judge_caveat
from pvlens.judges.training import CORRUPTIONS, corrupt, validate_judges, validation_frame
from pvlens.lens.generation import Generation, complete_sentences, generate
from pvlens.lens.hooks import Steering, ablate, incremental, on_resid_post, steer
from pvlens.lens.projection import (
    activations,
    last_prompt_projection,
    project,
    resid_post,
    residual_norms,
    response_projection,
    token_projections,
)
from pvlens.lens.sampling import sample_answers
from pvlens.lens.vectors import PersonaVector, cosine_matrix, from_tensor, layerwise_cosine
from pvlens.methods.capability import CapabilityReport, TaskResult, capability_suite
from pvlens.methods.drift import (
    against,
    base_projection,
    capability_of,
    cross_trait,
    drift_table,
    finetuning_shift,
    last_prompt_means,
    posthoc,
    shift_correlations,
    trait_score_after,
)
from pvlens.methods.evaluation import choose_layer, steered_capability, steering_sweep, summarise, trait_expression
from pvlens.methods.extraction import ExtractionResult, extract_persona, filter_pairs, prompt_separation
from pvlens.methods.finetuning import (
    Adapter,
    Intervention,
    LoRASettings,
    TrainingError,
    caft,
    finetune,
    finetuned,
    l2_projection,
    preventative,
)
from pvlens.methods.monitoring import (
    SHOTS,
    correlations,
    many_shot,
    monitor,
    system_prompt_ladder,
    token_html,
    trait_examples,
)
from pvlens.methods.persona import Persona, extraction_settings, layer_grid, persona_layer
from pvlens.methods.sae import (
    SAEMismatchError,
    SAERecipe,
    corpus_windows,
    decoder_cosines,
    evaluate_sae,
    load_sae,
    massive_tokens,
    max_activating,
    sae_layer,
    steering_scores,
    top_features,
    train_sae,
)
from pvlens.methods.screening import (
    Probe,
    Sample,
    ScreenSettings,
    dataset_level,
    extremes,
    filter_masks,
    judge_samples,
    preview,
    read_samples,
    sample_conversations,
    screen,
    screen_sets,
    separation_auc,
    sharegpt_samples,
)
from pvlens.models.loading import ChatModel, describe_model, load_model
from pvlens.models.registry import OFFLINE_MODELS, known_models
from pvlens.traits.artifacts import TraitArtifacts, load_trait, shipped_traits
from pvlens.traits.generator import generate_artifacts, generation_prompt

__version__ = "0.1.0"

__all__ = [
    "ablate",
    "activations",
    "Adapter",
    "against",
    "auc",
    "base_projection",
    "bootstrap_ci",
    "cache_dir",
    "CacheError",
    "caft",
    "capability_of",
    "capability_suite",
    "CapabilityReport",
    "CAVEATS",
    "chat_ids",
    "chat_text",
    "ChatModel",
    "ChecksumError",
    "choose_layer",
    "complete_sentences",
    "ContrastJudge",
    "corpus_windows",
    "correlations",
    "corrupt",
    "CORRUPTIONS",
    "cosine_matrix",
    "cross_trait",
    "dataset_level",
    "dataset_recipe",
    "DatasetError",
    "decoder_cosines",
    "default_judge",
    "default_model_name",
    "describe_model",
    "drift_table",
    "EmptySelectionError",
    "evaluate_sae",
    "extract_persona",
    "extraction_settings",
    "ExtractionResult",
    "extremes",
    "fast",
    "filter_masks",
    "filter_pairs",
    "finetune",
    "finetuned",
    "finetuning_shift",
    "from_tensor",
    "generate",
    "generate_artifacts",
    "Generation",
    "generation_prompt",
    "incremental",
    "Intervention",
    "Judge",
    "judge_caveat",
    "judge_for",
    "judge_samples",
    "JudgeError",
    "Judgement",
    "known_models",
    "l2_projection",
    "last_prompt_means",
    "last_prompt_projection",
    "layer_grid",
    "layerwise_cosine",
    "LEVELS",
    "LLMJudge",
    "load_dataset",
    "load_model",
    "load_sae",
    "load_trait",
    "LoRASettings",
    "many_shot",
    "massive_tokens",
    "max_activating",
    "monitor",
    "OFFLINE_MODELS",
    "OfflineJudge",
    "on_resid_post",
    "pearson",
    "pearson_by",
    "Persona",
    "persona_layer",
    "PersonaVector",
    "posthoc",
    "preventative",
    "preview",
    "Probe",
    "project",
    "prompt_and_response",
    "prompt_separation",
    "PVLensError",
    "read_dataset",
    "read_samples",
    "resid_post",
    "residual_norms",
    "response_projection",
    "sae_layer",
    "SAEMismatchError",
    "SAERecipe",
    "Sample",
    "sample_answers",
    "sample_conversations",
    "screen",
    "screen_sets",
    "ScreenSettings",
    "separation_auc",
    "sharegpt_samples",
    "shift_correlations",
    "shipped_traits",
    "SHOTS",
    "size",
    "spearman",
    "steer",
    "steered_capability",
    "Steering",
    "steering_scores",
    "steering_sweep",
    "summarise",
    "system_prompt_ladder",
    "TaskResult",
    "to_messages",
    "token_html",
    "token_projections",
    "top_features",
    "train_sae",
    "TrainingError",
    "trait_examples",
    "trait_expression",
    "trait_score_after",
    "TraitArtifacts",
    "TraitFormatError",
    "UnknownModelError",
    "validate_judges",
    "validation_frame",
    "VectorMismatchError",
]
