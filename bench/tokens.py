"""Tokens fed to each downstream agent of the demo: contracts versus each agent's full free-text answer.

    python bench/tokens.py [--file PATH]

Runs the demo pipeline (extract -> chunk -> summarise -> classify) on the embedded model and counts, with
the model's own tokenizer, what the downstream agents (summarise, classify) are fed:

- with contracts: the JSON of the upstream contract that baton passes (the chunks, the summaries);
- without: the full free-text answer the upstream agent gives when asked the same thing with no contract,
  which is what a pipeline that passes answers along would feed the next agent.

Prints both, per agent and in total, and the ratio.
"""

from __future__ import annotations

import argparse
import json
import tempfile

from baton import RunStore
from baton.demo import _agents, document_pipeline, load_document
from baton.providers import Message, get_provider
from baton.tokens import count_tokens

FREE_TEXT = "Answer in full sentences, as a report for the next specialist."


def free_text_answer(instructions: str, user: str, max_tokens: int = 1500) -> tuple[str, str]:
    """What the embedded model writes for the same task when no contract shapes its answer, and why it stopped.

    The same decoding settings as the agents (greedy, the same repeat penalty), so that a "length" stop (an
    answer that ran to the cap) is reported, not hidden in the ratio.
    """
    llm = get_provider("local")._model()
    out = llm.create_chat_completion(
        messages=[{"role": "system", "content": f"{instructions} {FREE_TEXT}"}, {"role": "user", "content": user}],
        max_tokens=max_tokens,
        temperature=0.0,
        repeat_penalty=1.15,
    )
    choice = out["choices"][0]
    return choice["message"]["content"] or "", choice.get("finish_reason") or "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--file", help="a text, Markdown or PDF file instead of the bundled sample")
    args = parser.parse_args()
    doc, _ = load_document(args.file)
    with tempfile.TemporaryDirectory() as tmp:
        store = RunStore(f"sqlite:///{tmp}/tokens.db")
        run = document_pipeline("local").run(doc, store=store)
        store.close()
    if not run.succeeded:
        raise SystemExit(f"the demo run failed at {run.failed_step}; run again (the tiny model is not always right)")
    outputs = {s.name: s.output for s in run.steps}
    extract, summarise, _ = _agents("local")
    # Without contracts, each agent's free-text answer is what the next agent reads.
    extract_text, extract_stop = free_text_answer(
        extract.instructions.replace("Reply with JSON only.", ""), doc.model_dump_json()
    )
    summarise_text, summarise_stop = free_text_answer(
        summarise.instructions.replace("Reply with JSON only.", ""), extract_text
    )
    rows = [
        ("summarise", run.step("chunk").output, extract_text, extract_stop),
        ("classify", outputs["summarise"], summarise_text, summarise_stop),
    ]
    print(f"\ndemo pipeline on the embedded model, run {run.id}; tokens counted with its tokenizer")
    print(f"{'agent fed':<12} {'contract JSON':>14} {'free text':>10} {'ratio':>7}  free text stopped by")
    total_contract = total_free = 0
    for agent, contract, text, stop in rows:
        c = count_tokens(json.dumps(contract, separators=(",", ":")))
        f = count_tokens(Message("user", text).content)
        total_contract, total_free = total_contract + c, total_free + f
        print(f"{agent:<12} {c:>14} {f:>10} {f / c:>6.1f}x  {stop}")
    print(f"{'total':<12} {total_contract:>14} {total_free:>10} {total_free / total_contract:>6.1f}x")


if __name__ == "__main__":
    main()
