"""The Python API (interp/api.py): the README's example runs as written, its numbers are the command line's on the
same runs and data, results save as the CLI saves them and the report renders them, figures are the report's, and
bad input is an InterpError naming the argument."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import EXAMPLES, MAX_LEN, invoke, json_close, snapshot

import interp
from interp.analyses.base import resolve_runs
from interp.analyses.ranks import load_model, resolve_data
from records.errors import InterpError

ROOT = Path(__file__).resolve().parents[1]
TIMINGS = ("seconds", "examples_per_second")  # the only fields two runs of one computation may differ in


def readme_example() -> tuple[str, str]:
    """The python block of the README's 'Python API' section, as written, and the text block of what it prints."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Python API"):]
    section = section[: section.index("\n## ", 1)]
    code, printed = (re.findall(rf"```{kind}\n(.*?)```", section, re.DOTALL) for kind in ("python", "text"))
    assert len(code) == len(printed) == 1, "the Python API section should hold one python block and one text block"
    return code[0], printed[0]


NUMBER = r"\d+\.\d+"


def same_but_numbers(got: str, documented: str, tolerance: float) -> bool:
    """The same lines, but for decimal numbers, each within `tolerance` of the documented one."""
    shape = lambda text: re.sub(NUMBER, "#", text).splitlines()  # noqa: E731
    numbers = lambda text: [float(x) for x in re.findall(NUMBER, text)]  # noqa: E731
    return shape(got) == shape(documented) and all(abs(a - b) <= tolerance for a, b in zip(numbers(got), numbers(documented)))


def test_the_readme_example_runs_as_written(tmp_path):
    script = tmp_path / "example.py"
    code, printed = readme_example()
    script.write_text(code, encoding="utf-8")
    env = os.environ | {"PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
                          check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    saved = json.loads((tmp_path / "runs/analyses/attn-diff/A-vs-B.json").read_text())
    assert saved["kind"] == "attn-diff" and saved["result"]["runs_a"] == ["A"] and saved["result"]["examples"] == 4
    assert [r["class"] for r in saved["inputs"]["runs"]] == ["PeftModel", "PeftModel"]
    assert saved["inputs"]["runs"][0]["peft_config"]["r"] == 8
    assert saved["inputs"]["runs"][0]["trainable_sha256"] != saved["inputs"]["runs"][1]["trainable_sha256"]  # two seeds
    assert same_but_numbers(done.stdout, printed, 0.002), f"it printed:\n{done.stdout}\nthe README says:\n{printed}"


# -- the same numbers as the command line -------------------------------------------------------------


@pytest.fixture(scope="module")
def world(cli_world):
    """cli_world's runs 'lora' and 'adapter', loaded into memory, and the 12 examples the commands' --limit 12 takes."""
    refs = resolve_runs(cli_world.runs, ["lora", "adapter"])
    data = resolve_data(refs, limit=EXAMPLES)
    models = {ref.name: load_model(ref) for ref in refs}  # name -> (encoder, model with its delta)
    return cli_world, models, data.examples


def without_timings(value):
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items() if k not in TIMINGS}
    if isinstance(value, list):
        return [without_timings(v) for v in value]
    return value


def cli_result(world, kind: str, args: list[str]) -> dict:
    cli_world = world[0]
    before = {p: p.stat().st_mtime_ns for p in (cli_world.runs / "analyses").rglob("*.json")}
    limit = [] if kind == "attribute" else ["--limit", str(EXAMPLES)]  # attribute draws its references from the whole split
    done = invoke([kind, *args, "--runs-dir", cli_world.runs, *limit])
    assert done.exit_code == 0, done.stderr
    written = [p for p in (cli_world.runs / "analyses" / kind).glob("*.json") if before.get(p) != p.stat().st_mtime_ns]
    assert len(written) == 1, written
    saved = json.loads(written[0].read_text())
    written[0].unlink()  # the world is shared: leave it as it was
    return saved


API_CASES = [  # (kind, CLI arguments, the API call on the loaded models m, the examples d and the runs directory)
    ("attn-diff", ["lora", "adapter"],
     lambda m, d, runs: interp.attn_diff(m["lora"][1], m["adapter"][1], d, max_len=MAX_LEN, labels=("lora", "adapter"))),
    ("attn-diff", ["lora", "adapter", "--side", "code", "--layer", "2"],
     lambda m, d, runs: interp.attn_diff("lora", "adapter", d, runs_dir=runs, side="code", layer=2)),
    ("attn-diff", ["adapter", "lora", "--side", "query", "--precision", "bf16"],
     lambda m, d, runs: interp.attn_diff(m["adapter"][1], m["lora"][1], d, max_len=MAX_LEN, labels=("adapter", "lora"),
                                         side="query", precision="bf16")),
    ("cka", ["lora", "adapter"],
     lambda m, d, runs: interp.cka(m["lora"][1], m["adapter"][1], d, max_len=MAX_LEN, labels=("lora", "adapter"))),
    ("cka", ["adapter", "lora", "--tokens", "all", "--estimator", "unbiased"],
     lambda m, d, runs: interp.cka("adapter", "lora", d, runs_dir=runs, tokens="all", estimator="unbiased")),
    ("ablate", ["lora", "--layers", "3-4"],
     lambda m, d, runs: interp.ablate(m["lora"][1], d, layers="3-4", max_len=MAX_LEN, label="lora")),
    ("ablate", ["adapter", "--sweep"],
     lambda m, d, runs: interp.ablate("adapter", d, sweep=True, runs_dir=runs)),
]


def _attribute(model, examples, runs, **options):
    """interp.attribute on the pair of the first example, its references drawn from the whole test split."""
    first = examples[0]
    return interp.attribute(model, first.query, first.code_text, data=runs.parent / "data/test.jsonl", steps=8, others=2,
                            max_len=MAX_LEN, **options)


API_CASES += [
    ("attribute", ["lora", "--example", "{idx}", "--steps", "8", "--others", "2"],
     lambda m, d, runs: _attribute(m["lora"][1], d, runs, labels=("lora",))),
    ("attribute", ["lora", "--example", "{idx}", "--baseline", "adapter", "--mode", "sides", "--steps", "8", "--others", "2"],
     lambda m, d, runs: _attribute("lora", d, runs, baseline="adapter", mode="sides", runs_dir=runs)),
]


@pytest.mark.parametrize("kind,args,call", API_CASES, ids=[f"{k}:{' '.join(a)}" for k, a, _ in API_CASES])
def test_the_api_gives_the_commands_numbers(world, kind, args, call):
    cli_world, models, examples = world
    saved = cli_result(world, kind, [a.format(idx=examples[0].idx) for a in args])
    got = call(models, examples, cli_world.runs)
    assert got.kind == kind
    mine = without_timings(got.to_dict()["result"])
    assert json_close(mine, without_timings(saved["result"]), 1e-6, 1e-9), f"{kind} {args}: the API's result differs"


def test_qualitative_ranks_as_the_runs_did(world):
    _, models, examples = world
    saved = cli_result(world, "qualitative", ["--baseline", "lora", "--candidate", "adapter"])
    got = interp.qualitative(models["lora"][1], models["adapter"][1], examples, max_len=MAX_LEN, labels=("lora", "adapter"))
    assert json_close(got.to_dict()["result"], saved["result"] | {"base": None}, 1e-6, 1e-9)


def test_data_as_a_file_or_a_split_is_described_as_the_commands_describe_it(cli_world):
    from interp.memory import examples_of

    file = cli_world.data / "test.jsonl"
    refs = resolve_runs(cli_world.runs, ["lora"])
    examples, described = examples_of(file)
    assert described == resolve_data(refs, data_file=file).describe()  # file, fingerprint, count: as --data FILE records
    split = interp.load_split(cli_world.data, "test")
    assert [e.idx for e in examples_of(split)[0]] == [e.idx for e in examples] and examples_of(split)[1]["file"] == "in memory"
    pairs = [(e.query, e.code_text) for e in examples[:3]]
    assert [(e.query, e.code_text) for e in examples_of(pairs)[0]] == pairs  # the text the model reads, unchanged
    assert examples_of([{"query": "a  b\n", "code": "x =\n 1", "idx": 7}])[0][0].code_text == "x = 1"  # whitespace: one space


# -- saving, the report, figures ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_pair(tiny_roberta_dir):
    """Two peft LoRA deltas (untrained, random B; two seeds) over their own copies of the tiny RoBERTa, and 6 pairs."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModel

    def lora(seed: int):
        torch.manual_seed(seed)
        config = LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value"], init_lora_weights=False)
        return get_peft_model(AutoModel.from_pretrained(tiny_roberta_dir), config)

    pairs = [(f"return item {i} of the list", f"def get(xs):\n    return xs[{i}]") for i in range(6)]
    return lora(1), lora(2), pairs


def test_an_adapter_in_memory_and_saved_gives_the_same_numbers(tiny_pair, tmp_path):
    """The PeftModels in memory through the API, and the same adapters saved with save_pretrained through
    `interp attn-diff PATH PATH --data FILE` (trainers.foreign): one result."""
    from helpers import write_split

    a, b, pairs = tiny_pair
    paths = [tmp_path / "adapter-a", tmp_path / "adapter-b"]
    for model, path in zip((a, b), paths):
        model.save_pretrained(path)
    file = write_split(tmp_path / "pairs.jsonl", [(q, c) for q, c in pairs])
    (tmp_path / "runs").mkdir()
    done = invoke(["attn-diff", *map(str, paths), "--data", file, "--runs-dir", tmp_path / "runs", "--no-progress"])
    assert done.exit_code == 0, done.stderr
    (saved,) = (tmp_path / "runs/analyses/attn-diff").glob("*.json")
    cli = json.loads(saved.read_text())
    got = interp.attn_diff(a, b, file, labels=tuple(map(str, paths)))  # the runs' names: their paths
    assert cli["inputs"]["max_len"] == got.inputs["max_len"] == 128  # the tiny base's longest input, both
    assert json_close(without_timings(got.to_dict()["result"]), without_timings(cli["result"]), 1e-6, 1e-9)


def test_save_writes_what_the_report_renders(tiny_pair, tmp_path):
    from reports import build_report

    a, b, pairs = tiny_pair
    diff = interp.attn_diff(a, b, pairs)
    similarity = interp.cka(a, b, [{"query": q, "code": c} for q, c in pairs], tokens="all")
    runs = tmp_path / "runs"
    paths = [diff.save(runs), similarity.save(runs), similarity.save(tmp_path / "elsewhere.json")]
    assert paths == [runs / "analyses/attn-diff/A-vs-B.json", runs / "analyses/cka/A-vs-B.all.json", tmp_path / "elsewhere.json"]
    for path, result in zip(paths, (diff, similarity, similarity)):
        saved = json.loads(path.read_text())
        assert {k: saved[k] for k in ("kind", "name", "inputs", "result")} == {
            k: v for k, v in json.loads(json.dumps(result.to_dict())).items() if k in ("kind", "name", "inputs", "result")}
    record = json.loads(paths[0].read_text())["inputs"]["runs"][0]
    assert (record["from"], record["class"], record["encoder_class"], record["peft_config"]["peft_type"]) == (
        "memory", "PeftModel", "RobertaModel", "LORA")
    report = build_report(runs_dir=runs, out=tmp_path / "report")
    assert report.problems == []
    assert (tmp_path / "report/attn-diff/A-vs-B.html").is_file() and (tmp_path / "report/cka/A-vs-B.all.html").is_file()


FIGURES = [  # (the analysis, the figure's div id, the trace types it holds): the tiny RoBERTa has 4 layers, 4 heads
    ("attn-diff", "query-grids", ["Heatmap"] * 3),  # total variation, Jensen-Shannon, signed content difference
    ("attn-diff", "code-entropy", ["Heatmap"] * 3),  # entropy of A, of B, the change
    ("cka", "code-matrix", ["Heatmap"]),
    ("cka", "query-diagonal", ["Scatter"]),  # one run a side: the diagonal, no seed band
    ("ablate", "ablation", ["Scatter"] * 2),  # keep only / drop only this layer
    ("qualitative", "set-means", ["Bar"] * 6),  # easy, hard, fixed, regressed, both correct, both wrong
]


@pytest.mark.parametrize("kind,div,traces", FIGURES, ids=[f"{k}:{d}" for k, d, _ in FIGURES])
def test_figures_are_the_reports(tiny_pair, kind, div, traces):
    import plotly.graph_objects as go

    a, b, pairs = tiny_pair
    result = {"attn-diff": lambda: interp.attn_diff(a, b, pairs), "cka": lambda: interp.cka(a, b, pairs),
              "ablate": lambda: interp.ablate(a, pairs, sweep=True),
              "qualitative": lambda: interp.qualitative(a, b, pairs)}[kind]()
    figures = result.figures()
    figure = figures[div]
    assert isinstance(figure, go.Figure) and [t.type for t in figure.data] == [t.lower() for t in traces]
    assert [t.type for t in result.figure().data] == [t.type for t in next(iter(figures.values())).data]
    if kind == "attn-diff":
        assert len(figure.data[0].z) == 4 and len(figure.data[0].z[0]) == 4  # [layer][head]
    if kind == "ablate":
        assert [len(t.y) for t in figure.data] == [4, 4]  # one point per layer


def test_a_seed_group_gets_the_null(tiny_pair, tiny_roberta_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModel

    a, b, pairs = tiny_pair
    config = LoraConfig(r=2, target_modules=["query"], init_lora_weights=False)
    torch.manual_seed(3)
    c = get_peft_model(AutoModel.from_pretrained(tiny_roberta_dir), config)
    torch.manual_seed(4)
    d = get_peft_model(AutoModel.from_pretrained(tiny_roberta_dir), config)
    got = interp.attn_diff([a, b], [c, d], pairs, side="code")
    assert got.name == "A-vs-B.seeds.code" and got.runs_a == ["A.1", "A.2"] and got.runs_b == ["B.1", "B.2"]
    null = got.seed_null
    assert (null.runs_a, null.runs_b, null.labellings, list(null.sides)) == (2, 2, 6, ["code"])  # C(4, 2) relabellings


def test_the_models_keep_their_training_mode(tiny_pair):
    a, b, pairs = tiny_pair
    a.train()
    interp.cka(a, b, pairs)
    assert a.training and all(m.training for m in a.modules())
    a.eval()


# -- bad input ---------------------------------------------------------------------------------------


def _head_model(path):
    from transformers import AutoModelForMaskedLM

    return AutoModelForMaskedLM.from_pretrained(path)


def _gpt2():
    from transformers import GPT2Config, GPT2Model

    return GPT2Model(GPT2Config(n_layer=1, n_head=2, n_embd=8, vocab_size=50))


BAD = [  # (what is wrong, the call on (a, b, pairs, the tiny base's directory, minilm), words the message must hold)
    ("empty data", lambda a, b, p, d, m: interp.attn_diff(a, b, []), ("data", "no examples")),
    ("data a dict", lambda a, b, p, d, m: interp.cka(a, b, {"q": "c"}), ("data", "dict")),
    ("a pair of three", lambda a, b, p, d, m: interp.cka(a, b, [("q", "c", "x")]), ("data[0]",)),
    ("an empty query", lambda a, b, p, d, m: interp.attn_diff(a, b, [*p, ("  ", "def f(): pass")]), ("data[6]", "non-empty")),
    ("a dict without code", lambda a, b, p, d, m: interp.attn_diff(a, b, [{"query": "x"}]), ("data[0]", "'code'")),
    ("an idx twice", lambda a, b, p, d, m: interp.cka(a, b, [{"query": "q", "code": "c", "idx": 3}] * 2), ("data[1]", "idx 3")),
    ("an idx not a number", lambda a, b, p, d, m: interp.cka(a, b, [{"query": "q", "code": "c", "idx": "x"}]),
     ("data[0]", "'x'")),
    ("no such data file", lambda a, b, p, d, m: interp.cka(a, b, "nosuch.jsonl"), ("nosuch.jsonl", "no such file")),
    ("not a model", lambda a, b, p, d, m: interp.attn_diff(3, b, p), ("model_a", "int")),
    ("not an encoder family", lambda a, b, p, d, m: interp.cka(a, _gpt2(), p), ("model_b", "GPT2Model", "gpt2")),
    ("a task head", lambda a, b, p, d, m: interp.attn_diff(a, _head_model(d), p), ("model_b", "RobertaForMaskedLM", ".roberta")),
    ("different tokenizers", lambda a, b, p, d, m: interp.attn_diff(a, m.model, p), ("different tokenizers",)),
    ("the wrong tokenizer", lambda a, b, p, d, m: interp.attn_diff(a, b, p, tokenizer=m.tokenizer),
     ("model_a", "not this model's tokenizer")),
    ("the same model twice", lambda a, b, p, d, m: interp.cka(a, a, p), ("'A' and 'B'", "one model")),
    ("no delta to ablate", lambda a, b, p, d, m: interp.ablate(m.model, p, layers="1"), ("plain encoder", "no delta")),
    ("a layer outside", lambda a, b, p, d, m: interp.ablate(a, p, layers="9"), ("--layers 9", "4 layers")),
    ("max_len 0", lambda a, b, p, d, m: interp.cka(a, b, p, max_len=0), ("max_len", "0")),
    ("a bad pooling", lambda a, b, p, d, m: interp.attn_diff(a, b, p, pooling="max"), ("pooling", "'max'")),
    ("one example for CKA", lambda a, b, p, d, m: interp.cka(a, b, p[:1]), ("at least 2 examples",)),
    ("an unknown run", lambda a, b, p, d, m: interp.cka("nosuch", b, p, runs_dir=d.parent), ("nosuch",)),
    ("an empty attribution query", lambda a, b, p, d, m: interp.attribute(a, " ", "x = 1"), ("query", "non-empty")),
]


@pytest.mark.parametrize("what,call,words", BAD, ids=[w for w, _, _ in BAD])
def test_bad_input_is_refused_by_name(tiny_pair, tiny_roberta_dir, minilm, tmp_path, monkeypatch, what, call, words):
    a, b, pairs = tiny_pair
    monkeypatch.chdir(tmp_path)
    before = snapshot(tmp_path)
    with pytest.raises(InterpError) as caught:
        call(a, b, pairs, tiny_roberta_dir, minilm)
    message = str(caught.value)
    assert all(w in message for w in words), f"{what}: {message!r} lacks {words}"
    assert "\n" not in message and snapshot(tmp_path) == before


def test_attribute_on_a_model_in_memory(tiny_pair):
    a, b, pairs = tiny_pair
    got = interp.attribute(a, "return item 2 of the list", "def get(xs):\n    return xs[2]", data=pairs, steps=8, others=2,
                           baseline=b)
    assert got.kind == "attribute" and got.run == "model" and got.baseline == "baseline" and got.reference == "others"
    path = got.paths[0]
    assert abs(path.attribution_sum - (path.score - path.reference_score) - path.convergence_delta) < 1e-4  # completeness


def test_import_interp_stays_cheap():
    done = subprocess.run([sys.executable, "-c", "import sys, interp; print('torch' in sys.modules, callable(interp.cka))"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert done.stdout.split() == ["False", "True"], done.stderr


def test_base_is_read_with_the_pooling_of_the_run_beside_it(world, tmp_path):
    """As `interp attn-diff base RUN` does: 'base' takes the run's pooling (mean, rewritten into a copy's manifest)."""
    runs = tmp_path / "runs"
    shutil.copytree(world[0].runs / "lora", runs / "lora")
    manifest = json.loads((runs / "lora/manifest.json").read_text())
    manifest["train"]["pooling"] = "mean"
    (runs / "lora/manifest.json").write_text(json.dumps(manifest))
    done = invoke(["attn-diff", "base", "lora", "--runs-dir", runs, "--limit", str(EXAMPLES)])
    assert done.exit_code == 0, done.stderr
    (saved,) = [json.loads(p.read_text()) for p in (runs / "analyses/attn-diff").glob("*.json")]
    got = interp.attn_diff("base", "lora", world[2], runs_dir=runs)
    assert saved["inputs"]["pooling"] == got.inputs["pooling"] == {"base": "mean", "lora": "mean"}
    assert json_close(without_timings(got.to_dict()["result"]), without_timings(saved["result"]), 1e-6, 1e-9)
