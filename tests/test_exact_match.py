"""Generation-based exact match (metrics.exact_match): what the model generates from the prompt alone."""

import torch

from easyedit_baft import metrics


class Scripted(torch.nn.Module):
    """A model whose greedy continuation of each prompt is scripted text (as the tokenizer spells it)."""

    def __init__(self, tok, continuations: dict):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.tok, self.continuations, self.budgets = tok, continuations, []

    def generate(self, input_ids, max_new_tokens, **kwargs):
        prompt = self.tok.decode(input_ids[0], skip_special_tokens=True)
        self.budgets.append(max_new_tokens)
        new = self.tok(self.continuations[prompt], add_special_tokens=False)["input_ids"][:max_new_tokens]
        return torch.cat([input_ids, torch.tensor([new])], dim=1)


REQUEST = {
    "prompt": "Where is X?", "target_new": "The Paris", "rephrase_prompt": "X is in",
    "portability": {"hop": {"prompt": "X's river is", "ground_truth": [["Seine", "la Seine"]]}},
    "locality": {"other": {"prompt": "Y is in", "ground_truth": "Rome"}},
}


def test_normalisation_drops_case_punctuation_articles_and_spacing():
    assert metrics.normalise_answer("  The  Paris, France!") == "paris france"


def test_scores_read_the_greedy_continuation(tok):
    unedited = Scripted(tok, {"Y is in": " Rome, Italy"})
    before = metrics.locality_continuations(unedited, tok, REQUEST)
    edited = Scripted(tok, {"Where is X?": " paris.", "X is in": " London", "X's river is": " la Seine",
                            "Y is in": " Rome, Italy"})
    assert metrics.exact_match(edited, tok, REQUEST, before) == {"rel": 1.0, "gen": 0.0, "loc": 1.0, "port": 1.0}


def test_locality_fails_when_any_generated_token_changes(tok):
    before = metrics.locality_continuations(Scripted(tok, {"Y is in": " Rome"}), tok, REQUEST)
    edited = Scripted(tok, {"Where is X?": " Paris", "X is in": " Paris", "X's river is": " Nile",
                            "Y is in": " Roma"})
    assert metrics.exact_match(edited, tok, REQUEST, before) == {"rel": 1.0, "gen": 1.0, "loc": 0.0, "port": 0.0}


def test_an_answer_is_not_matched_by_a_longer_budget_alone(tok):
    # Only the answer's length (plus slack) is generated: a later mention does not count.
    model = Scripted(tok, {"Where is X?": " It is not known, but maybe Paris"})
    assert metrics.generates_answer(model, tok, "Where is X?", "Paris") == 0.0
    assert model.budgets[-1] == len(tok(" Paris", add_special_tokens=False)["input_ids"]) + metrics.EM_SLACK_TOKENS


def test_absent_fields_are_not_measured(tok):
    model = Scripted(tok, {"Where is X?": " Paris"})
    assert metrics.exact_match(model, tok, {"prompt": "Where is X?", "target_new": "Paris"}, None) == \
        {"rel": 1.0, "gen": None, "loc": None, "port": None}
