# %% [markdown]
# (finding-samples)=
# # Finding the samples
#
# **What you will reproduce.** The paper's sample-level screening (§6.2, Fig. 9; Appendix K, Table 6): ΔP
# is not only a dataset average. Per sample, it separates the trait-laden rows of a training set from clean
# ones, and a threshold on it filters a dataset before training.
#
# - histograms of sample-level ΔP for each trait's Level II set against its Normal set, with the AUC of
#   telling them apart (paper Fig. 9);
# - thresholds at the 95th percentile of a clean reference set (the paper: 20,000 UltraChat samples; here:
#   real ShareGPT chats), for ΔP and for the judge's trait score (paper Table 6);
# - a mixed training set (Normal + Level II) filtered by ΔP, by the judge, and by both, each finetuned and
#   judged: which filter removes the drift? (paper Appendix K).

# %%
import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

import pvlens as pv
from pvlens import drift, screening

FAST = pv.fast()
TRAITS = ["evil", "sycophantic", "hallucinating"]
model = pv.load_model()
personas = drift.book_personas(model, TRAITS)
probes = [p.probe for p in personas.values()]
settings = screening.book_screen_settings()
training_sets = drift.book_training_sets()
samples = {label: screening.as_samples(rows, label) for label, rows in training_sets.items()}
result = screening.screen(model, [s for group in samples.values() for s in group], probes, settings)
scores = result.scores.assign(dataset=lambda f: f["id"].str.rsplit(":", n=1).str[0])
print(f"{scores['id'].nunique()} samples ({result.computed} scored now, the rest from the previous chapter's cache)")

# %% [markdown]
# ## Level II against Normal, sample by sample (paper Fig. 9)
#
# For each trait, the ΔP of every row of its Level II set and of its Normal set, on that trait's vector.
# The paper adds an EM-like pair (opinions with mistakes, on the hallucination vector); ours is MMLU
# answered wrongly with confident support, on the hallucinating vector.

# %%
pairs = [(t, f"{t} II", f"{t} normal") for t in TRAITS] + [("hallucinating", "mmlu II", "mmlu normal")]
pairs = [p for p in pairs if p[1] in samples and p[2] in samples]  # fast mode trains fewer sets
fig, axes = plt.subplots(1, len(pairs), figsize=(3.6 * len(pairs), 3.2), squeeze=False)
separation = []
for ax, (trait, flawed, clean) in zip(axes[0], pairs):
    g = scores[(scores["trait"] == trait) & scores["dataset"].isin([flawed, clean])]
    sns.histplot(g, x="delta_p", hue="dataset", element="step", stat="density", common_norm=False, ax=ax)
    a = screening.separation_auc(g.loc[g["dataset"] == flawed, "delta_p"], g.loc[g["dataset"] == clean, "delta_p"])
    n_f, n_c = (g["dataset"] == flawed).sum(), (g["dataset"] == clean).sum()
    separation.append({"vector": trait, "flawed set": flawed, "clean set": clean, "n flawed": n_f, "n clean": n_c,
                       "AUC": a})
    ax.set(title=f"{trait} vector: AUC {a:.2f}", xlabel="sample ΔP")
plt.tight_layout()
separation = pd.DataFrame(separation)
separation.round(3)

# %% [markdown]
# ## Thresholds from clean data (paper Table 6)
#
# The paper calls 20,000 UltraChat chats clean and sets each filter's threshold at their 95th percentile.
# UltraChat does not ship offline; real ShareGPT chats (first user and assistant turn) stand in. The judge
# score is the trait judge's score of each dataset answer.

# %%
reference = screening.sharegpt_samples(model.hf_tokenizer, pv.size(300, 12), max_prompt_tokens=512)
clean = screening.screen(model, reference, probes, settings).scores
judged = pd.concat([screening.judge_samples(model, reference, t, progress=False) for t in TRAITS])
clean = clean.merge(judged, on=["id", "line", "trait"])
thresholds = clean.groupby("trait")[["delta_p", "judge_trait"]].quantile(0.95).loc[TRAITS]
thresholds.columns = ["ΔP threshold (p95)", "judge threshold (p95)"]
thresholds.assign(reference_samples=clean.groupby("trait").size()).round(2)

# %% [markdown]
# ## Filtering a mixed set, then finetuning on what is left (paper Appendix K)
#
# For each trait: its Normal and Level II training rows together, then four training sets: all of them,
# those under the ΔP threshold, those under the judge threshold, and those under both. Each is finetuned
# with part II's settings and judged on the trait's evaluation questions.

# %%
ft_settings = pv.book_finetune_settings()
MIXED = [t for t in TRAITS if f"{t} normal" in samples and f"{t} II" in samples]  # fast mode: evil only
rows = []
for trait in MIXED:
    labels = [f"{trait} normal", f"{trait} II"]
    mixed = [s for label in labels for s in samples[label]]
    g = scores[(scores["trait"] == trait) & scores["dataset"].isin(labels)].merge(
        screening.judge_samples(model, mixed, trait, progress=False), on=["id", "line", "trait"])
    masks = screening.filter_masks(g, thresholds.loc[trait, "ΔP threshold (p95)"],
                                   thresholds.loc[trait, "judge threshold (p95)"])
    for name, keep in masks.items():
        kept = g[keep]
        adapter = pv.finetune(model, screening.conversations(mixed, kept["id"]), settings=ft_settings,
                              name=f"{trait}-mix-{name}", progress=False)
        rows.append({"trait": trait, "filter": name, "rows kept": len(kept), "of": len(g),
                     "Level II rows kept": int(kept["dataset"].str.endswith(" II").sum()),
                     "trait score after finetuning": drift.trait_score_after(
                         model, adapter, personas[trait], questions=pv.size(20, 3), n_per_question=pv.size(2, 1))})
filtered = pd.DataFrame(rows)
base_scores = {t: drift.trait_score_after(model, None, personas[t], questions=pv.size(20, 3),
                                          n_per_question=pv.size(2, 1)) for t in MIXED}
filtered["base model"] = filtered["trait"].map(base_scores)
filtered.set_index(["trait", "filter"]).round(1)

# %%
fig, ax = plt.subplots(figsize=(6.5, 3.2))
sns.barplot(filtered, x="trait", y="trait score after finetuning", hue="filter", ax=ax)
for i, t in enumerate(MIXED):
    ax.hlines(base_scores[t], i - 0.4, i + 0.4, color="black", ls="--", lw=1, label="base model" if i == 0 else None)
ax.set(ylim=(0, 100), xlabel="")
ax.legend(fontsize=7)
plt.tight_layout()

# %% [markdown]
# ## The paper's numbers and ours

# %%
def best_filter(trait):
    g = filtered[(filtered["trait"] == trait) & (filtered["filter"] != "no filter")]
    top = g.loc[g["trait score after finetuning"].idxmin()]
    return f"{top['filter']} ({top['trait score after finetuning']:.0f} vs {base_scores[trait]:.0f} base, " \
           f"{filtered[(filtered['trait'] == trait) & (filtered['filter'] == 'no filter')]['trait score after finetuning'].iloc[0]:.0f} unfiltered)"


paper_auc = {"evil": "≈ 1.00 (a replication; the paper: 'largely separable')", "sycophantic": "≈ 1.00 (same)",
             "hallucinating": "≈ 0.995 (same)"}
closing = [{"quantity": f"AUC, {r['flawed set']} vs {r['clean set']} ({r['vector']} vector)",
            "paper": paper_auc.get(r["flawed set"].split()[0], "0.89 (opinions, a replication)"),
            "ours": f"{r['AUC']:.2f} (n = {r['n flawed']} + {r['n clean']})",
            "why they differ": "our Level II sets are written by a 0.5B model and only partly overt; see the histograms"}
           for _, r in separation.iterrows()]
paper_thresholds = {"evil": "4.32", "sycophantic": "4.98", "hallucinating": "2.25"}
closing += [{"quantity": f"ΔP threshold, p95 of clean data ({t})", "paper": paper_thresholds[t] + " (UltraChat, Qwen)",
             "ours": f"{thresholds.loc[t, 'ΔP threshold (p95)']:.2f} (ShareGPT, n = {len(reference)})",
             "why they differ": "different model (activation scale), reference set and layer"} for t in TRAITS]
paper_best = {"evil": "ΔP and judge both remove the shift", "sycophantic": "ΔP best",
              "hallucinating": "judge best; both combined most consistent"}
closing += [{"quantity": f"best filter ({t})", "paper": paper_best[t], "ours": best_filter(t),
             "why they differ": "one finetune per filter (the paper averages 5) on ~100 rows"} for t in MIXED]
pd.DataFrame(closing).style.set_properties(**{"text-align": "left", "white-space": "normal"}).hide(axis="index")
