# %% [markdown]
# (decomposition)=
# # Decomposing persona vectors
#
# **What you will reproduce.** The paper's look inside its persona vectors (§7, Appendix M, Tables 8–10): a
# BatchTopK sparse autoencoder trained on the residual stream splits activations into sparse latents, each
# with a decoder direction. The latents whose directions are closest to a persona vector are candidate parts
# of it; their most-activating contexts say what they stand for, and steering with one direction alone says
# whether it carries the trait (the paper's trait expression score, TES).
#
# - the SAE that ships in `sae_checkpoints/` (trained by `python -m pvlens.train_sae`, model card beside it)
#   and its held-out quality: variance explained, cross-entropy loss recovered, L0, dead and dense latents;
# - for evil, sycophantic and hallucinating: the top latents by cosine with the persona vector, their
#   max-activating contexts with token-level highlighting, and a label for each;
# - the trait expression when steering with each of the top latents alone, beside the persona vector.

# %%
import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from IPython.display import HTML, display

import pvlens as pv
from pvlens import drift, sae as S

FAST = pv.fast()
TRAITS = ["evil", "sycophantic", "hallucinating"]
model = pv.load_model()
sae = S.book_sae(model)
layer = S.sae_layer(sae)
personas = drift.book_personas(model, TRAITS)
print(f"SAE: {sae.cfg.d_sae} latents on {sae.cfg.metadata.hook_name} (paper layer {layer + 1}); "
      f"persona layers: {', '.join(f'{t} {p.layer}' for t, p in personas.items())}")

# %% [markdown]
# ## How good is the SAE?
#
# On held-out text (the last 10% of the training sources' documents, never trained on). The issue's bar: variance
# explained ≥ 0.8 and CE loss recovered ≥ 80% at L0 ≤ 64 with at most 10% dead latents.

# %%
heldout = S.corpus_windows(model.hf_tokenizer, "heldout", pv.size(256, 8), seed=1)
quality = S.evaluate_sae(model, sae, heldout)
pd.Series(quality).to_frame("held-out").round(4)

# %% [markdown]
# ## Which latents point along each persona vector?
#
# The cosine between the persona vector at the SAE's layer and every decoder direction. With thousands of
# directions in a 576-dimensional space, a random direction has |cosine| around 0.04; the top latents stand
# out from that bulk.

# %%
cosines = pd.DataFrame({t: S.decoder_cosines(sae, p.vectors[layer]).numpy() for t, p in personas.items()})
fig, ax = plt.subplots(figsize=(6.5, 3.0))
sns.histplot(cosines.melt(var_name="trait", value_name="cosine"), x="cosine", hue="trait", element="step",
             bins=80, ax=ax)
ax.set(yscale="log", xlabel="cosine(persona vector, decoder direction)")
plt.tight_layout()
N_TOP = pv.size(5, 2)
top = {t: S.top_features(sae, p.vectors[layer], N_TOP) for t, p in personas.items()}
pd.concat({t: f for t, f in top.items()}, names=["trait", "rank"]).round(3)

# %% [markdown]
# ## What the top latents respond to
#
# For each trait's top latents, the held-out contexts where they fire hardest; the colour of each token is
# the latent's activation (the last token of each line is the maximum).

# %%
corpus = S.corpus_windows(model.hf_tokenizer, "heldout", pv.size(512, 8), seed=2)
examples = {t: S.max_activating(model, sae, corpus, top[t]["feature"].tolist(), top=pv.size(4, 1))
            for t in TRAITS}
for t in TRAITS:
    html = [f"<h4>{t}</h4>"]
    for f in top[t]["feature"]:
        html.append(f"<p><b>latent {f}</b></p>")
        for ex in examples[t][f]:
            html.append(pv.token_html(ex["tokens"], ex["acts"]))
    display(HTML("".join(html)))

# %% [markdown]
# ## Steering with one latent at a time (TES)
#
# Each direction is added at the SAE's layer while the model answers the trait's evaluation questions, at
# the same fraction of the residual norm as the steering chapter's strongest coherent setting, and the answers
# are judged. The persona vector's own row is the reference.

# %%
ALPHA = 0.2
tes = pd.concat({t: S.steering_scores(model, personas[t], sae, top[t]["feature"].tolist()[:pv.size(3, 1)], ALPHA,
                                      questions=pv.size(10, 2), n_per_question=pv.size(2, 1))
                 for t in TRAITS}, names=["trait", "row"]).reset_index("row", drop=True)
unsteered = {t: drift.expression(model, personas[t], questions=pv.size(10, 2), n_per_question=pv.size(2, 1))["trait"].mean()
             for t in TRAITS}
tes["unsteered"] = tes.index.map(unsteered)
tes.round(1)

# %% [markdown]
# ## The paper's numbers and ours

# %%
closing = [{"quantity": "SAE held-out fraction of variance explained / CE loss recovered / L0 / dead",
            "paper": "not reported for its SAEs (Qwen, 131k latents)",
            "ours": f"{quality['fraction_variance_explained']:.2f} / {quality['ce_loss_recovered']:.0%} / "
                    f"{quality['l0']:.0f} / {quality['dead_fraction']:.0%}",
            "why they differ": f"{sae.cfg.d_sae} latents trained on CPU on a few million tokens"}]
for t in TRAITS:
    best = top[t].iloc[0]
    g = tes.loc[t]
    feat = g[g["direction"] != "persona vector"]
    closing.append({"quantity": f"{t}: top latent cosine; best single-latent TES vs persona vector",
                    "paper": "top cosines ~0.2–0.5; single features steer nearly as well (Tables 8–10)",
                    "ours": f"{best['cosine']:.2f}; {feat['trait_score'].max():.0f} vs "
                            f"{g[g['direction'] == 'persona vector']['trait_score'].iloc[0]:.0f} "
                            f"(unsteered {unsteered[t]:.0f})",
                    "why they differ": "a 135M model, a small SAE, an offline judge"})
pd.DataFrame(closing).style.set_properties(**{"text-align": "left", "white-space": "normal"}).hide(axis="index")
