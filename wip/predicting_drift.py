# %% [markdown]
# (predicting-drift)=
# # Predicting drift from data
#
# **What you will reproduce.** The paper's data-screening result (§6.1, Fig. 8, 17, 21, 23): before any
# finetuning, one forward pass per sample says how far a dataset will move the model along a persona vector.
#
# - the **projection difference** ΔP of a sample: the mean residual stream over the dataset's response,
#   minus the same over the base model's own (greedy) response to the same prompt, projected on the unit
#   persona vector at the chosen layer; a dataset's ΔP is the mean over its samples;
# - dataset-level ΔP of every part II training set against the trait score of the model finetuned on it
#   (paper Fig. 8) and against the finetuning shift (Fig. 17);
# - two cheaper readings from the same passes: the **raw projection** of the dataset response, without the
#   base response (Fig. 21), and the **prompt-only proxy**, which replaces the base response by the last
#   prompt token and needs no generation (Fig. 23).
#
# The finetunes and their trait scores are the ones of {ref}`finetuning-drift` (read from the cache).

# %%
import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

import pvlens as pv
from pvlens import drift, screening, stats

FAST = pv.fast()
TRAITS = ["evil", "sycophantic", "hallucinating"]
model = pv.load_model()
personas = drift.book_personas(model, TRAITS)
probes = [p.probe for p in personas.values()]
for p in personas.values():
    print(f"{p.trait}: layer {p.layer} (paper layer {p.layer + 1})")

# %% [markdown]
# ## Every training set, screened
#
# The samples are exactly the rows each part II model was finetuned on. The base model answers each prompt
# greedily (the paper's real-world recipe; it does not say how it sampled the natural responses for its
# synthetic sets), once: the answers are cached and shared by every trait.

# %%
finetunes = drift.book_finetunes(model)
samples = {label: screening.as_samples(rows, label) for label, rows in drift.book_training_sets().items()}
settings = screening.book_screen_settings()
result = screening.screen(model, [s for group in samples.values() for s in group], probes, settings)
print(f"{sum(map(len, samples.values()))} samples from {len(samples)} training sets; {result.computed} scored now "
      f"in {result.seconds:.0f} s ({result.tokens} tokens), the rest from the cache; skipped: {result.skipped or 'none'}")
scores = result.scores.assign(dataset=lambda f: f["id"].str.rsplit(":", n=1).str[0])
scores.groupby(["dataset", "trait"])[["delta_p", "projection", "proxy_delta_p"]].mean().unstack("trait").round(2)

# %% [markdown]
# ## ΔP against the trait after finetuning (paper Fig. 8)
#
# Each point is one training set: its dataset-level ΔP (before training) and the trait score of the model
# trained on it ({ref}`finetuning-drift`).

# %%
table = drift.book_drift_table(model, finetunes, list(personas.values()))
data_level = screening.dataset_level(scores, by="dataset").merge(
    table.rename(columns={"finetune": "dataset"}), on=["dataset", "trait"])
data_level[["name", "level"]] = data_level["dataset"].str.split(" ", expand=True)
fig, axes = plt.subplots(1, len(TRAITS), figsize=(4.3 * len(TRAITS), 3.4))
for ax, t in zip(axes, TRAITS):
    g = data_level[data_level["trait"] == t]
    sns.scatterplot(g, x="delta_p", y="trait_score", hue="name", style="level", s=60, ax=ax)
    r = stats.pearson_by(g, "delta_p", "trait_score").iloc[0]
    ax.set(title=f"{t}: r = {r['pearson_r']:.2f} (n = {r['n']})", xlabel="dataset ΔP", ylabel="trait score after finetuning")
    ax.legend(fontsize=6, ncol=2)
plt.tight_layout()

# %% [markdown]
# ## Which reading predicts best (paper Fig. 8, 17, 21, 23)
#
# Pearson r across the training sets, per trait, of four data-only readings against the trait score after
# finetuning, and of ΔP against the finetuning shift (the activation change the finetune actually made).

# %%
readings = {"ΔP": "delta_p", "raw projection": "projection", "prompt-only proxy": "proxy_delta_p"}
rows = []
for name, column in readings.items():
    for trait, r in stats.pearson_by(data_level, column, "trait_score", by="trait").iterrows():
        rows.append({"reading": f"{name} vs trait score", "trait": trait, **r})
for trait, r in stats.pearson_by(data_level, "delta_p", "shift", by="trait").iterrows():
    rows.append({"reading": "ΔP vs finetuning shift", "trait": trait, **r})
predictive = pd.DataFrame(rows)
predictive.pivot(index="reading", columns="trait", values="pearson_r").loc[
    [f"{n} vs trait score" for n in readings] + ["ΔP vs finetuning shift"], TRAITS].round(2)

# %%
fig, ax = plt.subplots(figsize=(6.5, 3.2))
sns.barplot(predictive, x="trait", y="pearson_r", hue="reading", ax=ax)
ax.axhline(0, color="black", lw=0.8)
ax.set(ylim=(-1, 1), ylabel="Pearson r across training sets", xlabel="")
ax.legend(fontsize=7)
plt.tight_layout()

# %% [markdown]
# ## How the cost compares
#
# The proxy reads one forward pass per sample; ΔP also generates the base answer and reads it. The
# benchmark `benchmarks/bench_screen.py` measures both side by side; here is what this chapter's run cost.

# %%
pd.Series({"samples": result.scores["id"].nunique(), "tokens read (this run)": result.tokens,
           "seconds (this run)": round(result.seconds, 1),
           "results log": result.cache}).to_frame("value")

# %% [markdown]
# ## The paper's numbers and ours

# %%
def row(quantity, paper, reading, trait, target="trait_score"):
    r = predictive[(predictive["reading"] == reading) & (predictive["trait"] == trait)].iloc[0]
    reproduced = "yes" if r["pearson_r"] >= 0.5 and r["p"] < 0.05 else "no, at this scale"
    return {"quantity": quantity, "paper": paper, "ours": f"{r['pearson_r']:.2f} (p = {r['p']:.3f}, n = {r['n']})",
            "reproduced here": reproduced,
            "why they differ": "13 training sets of at most 100 samples and a 135M model vs 24 sets of thousands "
                               "on a 7B model; trait scores from an offline judge with known blind spots"}


paper_fig8 = "0.88–0.95 (Fig. 8; a review's figures, not in the paper's text)"
closing = [row(f"ΔP vs trait score ({t})", paper_fig8, "ΔP vs trait score", t) for t in TRAITS]
closing += [row(f"raw projection vs trait score ({t})", p, "raw projection vs trait score", t)
            for t, p in zip(TRAITS, ["0.784", "0.540", "0.635"])]
closing += [row(f"prompt-only proxy vs trait score ({t})", p, "prompt-only proxy vs trait score", t)
            for t, p in zip(TRAITS, ["0.931", "0.581", "0.689"])]
closing += [row(f"ΔP vs finetuning shift ({t})", p, "ΔP vs finetuning shift", t)
            for t, p in zip(TRAITS, ["0.839 (Qwen)", "0.745", "0.408"])]
pd.DataFrame(closing).style.set_properties(**{"text-align": "left", "white-space": "normal"}).hide(axis="index")
