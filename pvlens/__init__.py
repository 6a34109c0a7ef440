"""pvlens: persona vectors with TransformerLens.

A flat API over one module per technique::

    import pvlens as pv
    model = pv.load_model()                        # SmolLM2-135M-Instruct, offline
    acts = pv.activations(model, ["Hi!"], layers=[15])
    with pv.steer(model, vector, layer=15, alpha=4.0):
        out = pv.generate(model, ["How should I treat my neighbour?"])

Layers are TransformerLens block indices: the paper's layer ℓ is ``layer = ℓ - 1``
(``blocks[ℓ-1].hook_resid_post``).
"""

from pvlens.capability import CapabilityReport, TaskResult, capability_suite
from pvlens.chat import chat_ids, chat_text, prompt_and_response, to_messages
from pvlens.config import cache_dir, fast, size
from pvlens.errors import (CacheError, ChecksumError, EmptySelectionError, JudgeError, PVLensError, TraitFormatError,
                           UnknownModelError, VectorMismatchError)
from pvlens.evaluation import Steering, book_grid, book_layer, choose_layer, sample_answers, steered_capability, steering_sweep, summarise, trait_expression
from pvlens.extraction import ExtractionResult, book_settings, extract_persona, filter_pairs, prompt_separation
from pvlens.generation import Generation, generate
from pvlens.generator import generate_artifacts
from pvlens.hooks import ablate, incremental, on_resid_post, residual_norms, steer
from pvlens.datasets import DatasetError, load_dataset, read_dataset
from pvlens.drift import Persona
from pvlens.finetuning import (Adapter, Intervention, LoRASettings, TrainingError, book_finetune_settings, book_rows, caft,
                               finetune, finetuned, l2_projection, preventative)
from pvlens.contrast_judge import ContrastJudge
from pvlens.judges import Judge, Judgement, default_judge, judge_for
from pvlens.llm_judge import LLMJudge
from pvlens.offline_judge import OfflineJudge
from pvlens.models import ChatModel, load_model
from pvlens.monitoring import correlations, many_shot, monitor, system_prompt_ladder, token_html, trait_examples
from pvlens.projection import (activations, last_prompt_projection, project, resid_post, response_projection,
                               token_projections)
from pvlens.registry import known_models
from pvlens.sae import (SAEMismatchError, SAERecipe, decoder_cosines, evaluate_sae, load_sae, massive_tokens,
                        max_activating, steering_scores, top_features, train_sae)
from pvlens.traits import TraitArtifacts, load_trait, shipped_traits
from pvlens.vectors import PersonaVector, cosine_matrix, from_tensor, layerwise_cosine

__version__ = "0.1.0"

__all__ = [
    "CacheError", "CapabilityReport", "ChatModel", "ChecksumError", "EmptySelectionError", "ExtractionResult", "Generation", "Judge",
    "JudgeError", "Judgement", "LLMJudge", "OfflineJudge", "PVLensError", "PersonaVector", "TraitArtifacts", "TraitFormatError",
    "UnknownModelError", "VectorMismatchError", "TaskResult", "activations", "cache_dir", "capability_suite", "chat_ids", "chat_text", "default_judge",
    "extract_persona", "fast", "filter_pairs", "from_tensor", "generate", "generate_artifacts", "incremental",
    "known_models", "last_prompt_projection", "load_model", "load_trait", "on_resid_post", "project",
    "prompt_and_response", "prompt_separation", "resid_post", "residual_norms", "response_projection",
    "shipped_traits", "size", "steer", "to_messages", "token_projections",
    "ContrastJudge", "judge_for", "sample_answers", "Steering", "book_grid", "book_layer", "book_settings", "choose_layer", "correlations", "many_shot", "monitor", "steered_capability",
    "steering_sweep", "ablate", "DatasetError", "load_dataset", "read_dataset", "Adapter", "Intervention",
    "LoRASettings", "Persona", "TrainingError", "book_finetune_settings", "book_rows", "caft", "finetune", "finetuned", "l2_projection", "preventative", "cosine_matrix", "layerwise_cosine", "summarise", "system_prompt_ladder", "token_html", "trait_examples", "trait_expression",
    "SAEMismatchError", "SAERecipe", "decoder_cosines", "evaluate_sae", "load_sae", "massive_tokens", "max_activating",
    "steering_scores", "top_features", "train_sae",
]
