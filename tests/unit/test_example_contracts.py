"""The shipped examples' contracts refuse a model's junk: the answers below were recorded from the embedded model
on real documents. Junk is re-asked; junk that persists fails the agent's step with the raw answer kept, and
nothing after it runs. The demo's extractor and classifier answer the numbers of sentences they were shown
(the embedded model wrote facts such as "text" when asked to copy them): a number that is not one is junk too."""

import json

import pytest

from baton import Pipeline, RunStatus, ScriptedModel
from baton.demo import (
    Classification,
    Document,
    ExtractionResult,
    Picks,
    document_pipeline,
    document_sentences,
    load_document,
)
from baton.errors import InvalidInput
from baton.examples import research, triage

SAMPLE = load_document()[0]
FIRST = document_sentences(SAMPLE)[0]  # "Northwind Logistics closed the third quarter with revenue of 48.2 million..."
GOOD_EXTRACTION = {
    "key_sentences": [1],
    "raw_data_summary": "Northwind Logistics grew revenue and expanded its warehouse.",
    "confidence_score": 0.9,
}
EXTRACTED = {
    "key_facts": [FIRST],
    "raw_data_summary": "Northwind Logistics grew revenue and expanded its warehouse.",
    "confidence_score": 0.9,
    "extraction_warnings": [],
}
GOOD_SUMMARIES = {"summaries": ["Revenue grew 12 percent."], "overall": "Revenue was 48.2 million euros, up."}
# The classifier answers the number of the sentence of the summaries that shows its label; that sentence,
# quoted, is the label's evidence.
GOOD_LABEL_PICK = {"evidence": 1, "label": "finance", "confidence": 0.8}
GOOD_LABEL = {"evidence": "Revenue grew 12 percent.", "label": "finance", "confidence": 0.8}

# Recorded junk: each is well-formed JSON in the contract's shape, and says nothing.
JUNK_EXTRACTIONS = [
    GOOD_EXTRACTION | {"key_sentences": [1, 13]},  # the sample has 12 numbered sentences
    GOOD_EXTRACTION | {"key_sentences": ["text"]},  # a fact written out, not picked
    GOOD_EXTRACTION | {"extraction_warnings": ["]\n{"]},
    GOOD_EXTRACTION | {"extraction_warnings": ["name="]},
    GOOD_EXTRACTION | {"extraction_warnings": ["105348769"]},
    GOOD_EXTRACTION | {"raw_data_summary": "{{(1)"},
    GOOD_EXTRACTION | {"raw_data_summary": "Cats sleep most of the afternoon."},  # words, not the document's
]
JUNK_LABELS = [
    {"label": "finance", "confidence": 0.5},  # no evidence: the demo's "finance (0.5)" for every document
    {"evidence": "", "label": "finance", "confidence": 0.5},
    {"evidence": "quarterly dividends", "label": "finance", "confidence": 0.5},  # not in the summaries
    {"evidence": 3, "label": "finance", "confidence": 0.5},  # the summaries have two sentences
    {"evidence": 1, "label": "legal", "confidence": 0.5},  # in them, but shows no legal matter
]


def demo_run(store, answers):
    doc, _ = load_document()
    model = ScriptedModel(answers)
    return document_pipeline(model).run(doc, store=store), model


@pytest.mark.parametrize("junk", JUNK_EXTRACTIONS, ids=range(len(JUNK_EXTRACTIONS)))
def test_junk_facts_or_summary_are_re_asked_and_the_good_answer_goes_on(store, junk):
    run, model = demo_run(store, [junk, GOOD_EXTRACTION, GOOD_SUMMARIES, GOOD_LABEL_PICK])
    assert run.status is RunStatus.SUCCEEDED, run.step("extract").error
    assert run.step("extract").output == EXTRACTED
    assert [c.outcome for c in run.step("extract").calls] == ["invalid", "answer"]
    reask = model.requests[1][-1].content
    assert "Picks" in reask and any(field in reask for field in junk if junk[field] != GOOD_EXTRACTION.get(field))


@pytest.mark.parametrize("junk", JUNK_EXTRACTIONS, ids=range(len(JUNK_EXTRACTIONS)))
def test_junk_that_persists_fails_extract_keeping_the_raw_answer_and_nothing_after_runs(store, junk):
    run, model = demo_run(store, [junk])
    assert run.status is RunStatus.FAILED
    error = run.step("extract").error
    assert error.type == "ContractViolation" and "Picks" in error.message
    assert json.loads(error.raw_output) == junk
    changed = {field for field in junk if junk[field] != GOOD_EXTRACTION.get(field)}
    assert {e["field"].split(".")[0] for e in error.validation_errors} == changed
    assert len(model.requests) == 3  # the answer and two re-asks
    assert [run.step(s).status.value for s in ("chunk", "summarise", "classify")] == ["pending"] * 3


@pytest.mark.parametrize("junk", JUNK_LABELS, ids=range(len(JUNK_LABELS)))
def test_a_label_without_evidence_from_the_summaries_is_re_asked_then_refused(store, junk):
    run, _ = demo_run(store, [GOOD_EXTRACTION, GOOD_SUMMARIES, junk, GOOD_LABEL_PICK])
    assert run.status is RunStatus.SUCCEEDED and run.output == GOOD_LABEL
    run, _ = demo_run(store, [GOOD_EXTRACTION, GOOD_SUMMARIES, junk])
    error = run.step("classify").error
    assert run.status is RunStatus.FAILED and error.type == "ContractViolation" and "LabelPick" in error.message
    assert json.loads(error.raw_output) == junk


def test_the_re_ask_says_what_was_wrong_with_the_label():
    with pytest.raises(ValueError, match="no word that marks 'legal'"):
        Classification.model_validate({"evidence": "Revenue grew", "label": "legal", "confidence": 0.5})


def test_the_extractor_reads_the_documents_sentences_numbered_and_hands_on_the_ones_it_picks(store):
    run, model = demo_run(store, [GOOD_EXTRACTION | {"key_sentences": [3, 1, 3]}, GOOD_SUMMARIES, GOOD_LABEL_PICK])
    system, user = model.requests[0]
    assert system.role == "system" and model.schemas[0] == Picks.model_json_schema()
    assert user.content.startswith(f"{SAMPLE.title}\n\n1. {FIRST}\n2. Operating margin improved")
    sentences = document_sentences(SAMPLE)
    assert len(sentences) == 12 and "Risks remain." not in sentences  # two words are not a fact
    assert run.step("extract").output["key_facts"] == [sentences[2], FIRST]  # each once, in the model's order


def test_a_number_beyond_the_documents_sentences_is_refused_naming_the_field(store):
    run, _ = demo_run(store, [GOOD_EXTRACTION | {"key_sentences": [2, 40]}])
    (error,) = run.step("extract").error.validation_errors
    assert error["field"] == "key_sentences" and "the document has 12 numbered sentences: 40" in error["message"]


def test_a_key_fact_must_be_a_sentence_of_the_document_word_for_word():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="not a sentence of the document"):
        ExtractionResult.model_validate(
            EXTRACTED | {"key_facts": ["Revenue was 48.2 million euros."]}, context={"input": SAMPLE}
        )
    assert ExtractionResult.model_validate(EXTRACTED, context={"input": SAMPLE})


def test_a_summary_line_that_shares_no_word_with_the_facts_is_refused(store):
    junk = {"summaries": ["Cats sleep all afternoon."], "overall": "Revenue was 48.2 million euros."}
    run, _ = demo_run(store, [GOOD_EXTRACTION, junk])
    assert run.status is RunStatus.FAILED
    (error,) = run.step("summarise").error.validation_errors
    assert error["field"] == "summaries" and "'Cats sleep all afternoon.' shares no words" in error["message"]
    assert run.step("classify").status.value == "pending"


def test_a_misspelt_input_field_is_refused_naming_it():
    with pytest.raises(InvalidInput, match="txt"):
        document_pipeline(ScriptedModel([GOOD_EXTRACTION])).run({"title": "x", "txt": "Revenue rose."})
    with pytest.raises(InvalidInput, match="custmer"):
        Pipeline("triage-intake", [triage.intake]).run({"custmer": "Ada", "customer": "Ada", "text": "Charged twice."})
    assert Document.model_config.get("extra") == "forbid"


def test_every_contract_of_the_examples_refuses_unknown_fields():
    from pydantic import BaseModel

    import baton.demo

    for module in (baton.demo, triage, research):
        contracts = [v for v in vars(module).values() if isinstance(v, type) and issubclass(v, BaseModel)]
        contracts = [c for c in contracts if c.__module__ == module.__name__]
        assert contracts and all(c.model_config.get("extra") == "forbid" for c in contracts), module.__name__


def test_triage_summary_in_other_words_and_a_junk_reply_are_refused():
    from pydantic import ValidationError

    request = triage.CustomerRequest(customer="Ada", text="I was charged twice in March.")
    with pytest.raises(ValidationError, match="shares no words"):
        triage.Summary.model_validate({"summary": "The weather is nice today."}, context={"input": request})
    assert triage.Summary.model_validate({"summary": "Ada was charged twice."}, context={"input": request})
    with pytest.raises(ValidationError, match="must start with a letter"):
        triage.Reply.model_validate({"subject": "Re: charge", "body": '{"body": "name="}'})
    with pytest.raises(ValidationError, match="plain prose"):
        triage.Reply.model_validate({"subject": "Re: charge", "body": "Dear Ada, name= we will look at it."})
