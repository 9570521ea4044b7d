"""Bad input is a one-line DataError naming the file (and line), never a bare traceback.

Every case writes a small malformed file set into ``tmp_path`` and loads it with the real
loaders (no full data needed).
"""

from __future__ import annotations

import gzip
import io
import json
import lzma
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from sagerl.errors import ConfigError, DataError, UnknownNameError
from sagerl.workload import load_pool

AZURE = "azure_llm_2023/AzureLLMInferenceTrace_conv.csv"
AZURE_HEAD = "TIMESTAMP,ContextTokens,GeneratedTokens\n"
ROW = "2023-11-16 18:15:46.6805900,374,44\n"
CASTILLO_HEAD = "split,dataset,model,sample_id,prompt_id,input_size,n_outputs,output_sizes\n"
MODEL = "meta-llama--Llama-3.1-8B-Instruct"


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SAGERL_CACHE", str(tmp_path / "cache"))
        yield


def write(root: Path, rel: str, data: bytes | str) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = data.encode() if isinstance(data, str) else data
    if rel.endswith(".gz"):
        raw = gzip.compress(raw)
    elif rel.endswith(".xz"):
        raw = lzma.compress(raw)
    path.write_bytes(raw)
    return path


def expect(match: str, name: str, data_dir: Path, **options: object) -> str:
    with pytest.raises(DataError, match=match) as info:
        load_pool(name, data_dir, use_cache=False, **options)
    message = str(info.value)
    assert "\n" not in message
    return message


def castillo_files(root: Path, rows: list[str], prompts: list[str]) -> None:
    write(root, "castillo/samples.csv.gz", CASTILLO_HEAD + "".join(rows))
    write(root, "castillo/prompts.jsonl.xz", "".join(prompts))


GOOD_SAMPLE = f"test,Mbpp,{MODEL},s1,p1,40,10,1 2 3 4 5 6 7 8 9 10\n"
GOOD_PROMPT = json.dumps({"prompt_id": "p1", "prompt_text": "hi"}) + "\n"


def test_azure_row_with_extra_field_names_line(tmp_path: Path) -> None:
    write(tmp_path, AZURE, AZURE_HEAD + ROW + ROW + "2023-11-16 18:15:47.0,1,2,3\n")
    msg = expect("line 4", "azure_conv", tmp_path)
    assert "AzureLLMInferenceTrace_conv.csv" in msg


@pytest.mark.parametrize(
    ("bad_row", "match"),
    [
        ("2023-11-16 18:15:47.0,abc,44\n", r"line 3: column ContextTokens: value not a number"),
        ("2023-11-16 18:15:47.0,10,-5\n", r"line 3: column GeneratedTokens: -5 is below 0"),
        ("2023-11-16 18:15:47.0,,44\n", r"line 3: column ContextTokens: value missing"),
        ("yesterday,10,44\n", r"line 3: column TIMESTAMP: cannot parse"),
        ("2023-11-16 18:15:47.0,10.5,44\n", r"line 3: column ContextTokens: 10.5 is not an int"),
    ],
)
def test_azure_bad_values_name_line(tmp_path: Path, bad_row: str, match: str) -> None:
    write(tmp_path, AZURE, AZURE_HEAD + ROW + bad_row)
    expect(match, "azure_conv", tmp_path)


def test_missing_column_is_named(tmp_path: Path) -> None:
    write(tmp_path, AZURE, "TIMESTAMP,ContextTokens\n2023-11-16 18:15:46.68,374\n")
    expect("missing column.*GeneratedTokens", "azure_conv", tmp_path)


def test_truncated_gzip_is_named(tmp_path: Path) -> None:
    rel = "vidur_processed_traces/sharegpt_8k_filtered_stats_llama2_tokenizer.csv.gz"
    body = "num_prefill_tokens,num_decode_tokens\n" + "10,20\n" * 5000
    path = write(tmp_path, rel, body)
    path.write_bytes(path.read_bytes()[:-30])
    msg = expect("truncated or corrupt compressed stream", "vidur_sharegpt", tmp_path)
    assert "sharegpt_8k_filtered_stats_llama2_tokenizer.csv.gz" in msg


def test_truncated_xz_names_file_and_line(tmp_path: Path) -> None:
    prompts = [
        json.dumps({"prompt_id": f"p{i}", "prompt_text": "x" * 50}) + "\n" for i in range(2000)
    ]
    castillo_files(tmp_path, [GOOD_SAMPLE], prompts)
    path = tmp_path / "castillo/prompts.jsonl.xz"
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    expect(r"prompts\.jsonl\.xz( line \d+)?: truncated", "castillo", tmp_path, model=MODEL)


def test_bad_json_line_is_named(tmp_path: Path) -> None:
    castillo_files(tmp_path, [GOOD_SAMPLE], [GOOD_PROMPT, '{"prompt_id": "p2", \n'])
    expect(r"prompts\.jsonl\.xz line 2: invalid JSON", "castillo", tmp_path, model=MODEL)


def test_castillo_wrong_sample_count_names_line(tmp_path: Path) -> None:
    bad = f"test,Mbpp,{MODEL},s2,p1,40,10,1 2 3\n"
    castillo_files(tmp_path, [GOOD_SAMPLE, bad], [GOOD_PROMPT])
    expect(
        r"samples\.csv\.gz line 3: column output_sizes: 3 samples, expected 10",
        "castillo",
        tmp_path,
        model=MODEL,
    )


def test_castillo_negative_input_size_names_line(tmp_path: Path) -> None:
    other = "test,Mbpp,other-model,s0,p1,40,10,1 2 3 4 5 6 7 8 9 10\n"
    bad = f"test,Mbpp,{MODEL},s2,p1,-4,10,1 2 3 4 5 6 7 8 9 10\n"
    castillo_files(tmp_path, [other, GOOD_SAMPLE, bad], [GOOD_PROMPT])
    expect(
        r"samples\.csv\.gz line 4: column input_size: -4 is below 0",
        "castillo",
        tmp_path,
        model=MODEL,
    )


def test_castillo_unknown_model_lists_valid(tmp_path: Path) -> None:
    castillo_files(tmp_path, [GOOD_SAMPLE], [GOOD_PROMPT])
    with pytest.raises(UnknownNameError, match=f"valid: {MODEL}"):
        load_pool("castillo", tmp_path, use_cache=False, model="meta-llama--Llama-3.1-8B")


def test_castillo_prompt_without_text(tmp_path: Path) -> None:
    castillo_files(tmp_path, [GOOD_SAMPLE], [json.dumps({"prompt_id": "zz", "prompt_text": "a"})])
    expect(r"samples\.csv\.gz line 2: prompt_id 'p1' has no text", "castillo", tmp_path)


def test_sharegpt_id_mismatch_names_jsonl_line(tmp_path: Path) -> None:
    head = "id,record_index,turn,message_index,prompt_tokens_llama3,response_tokens_llama3\n"
    write(tmp_path, "sharegpt/sharegpt_turns.csv.gz", head + "a_0,0,0,0,3,4\nb_0,1,0,0,3,4\n")
    conv = [{"from": "human", "value": "hello"}, {"from": "gpt", "value": "hi"}]
    lines = [json.dumps({"id": i, "conversations": conv}) + "\n" for i in ("a_0", "c_0")]
    write(tmp_path, "sharegpt/sharegpt_v3_partial_conversations.jsonl.xz", "".join(lines))
    expect(r"jsonl\.xz line 2: record id 'c_0', turns table says 'b_0'", "sharegpt", tmp_path)


def test_sharegpt_turn_past_end_of_texts(tmp_path: Path) -> None:
    head = "id,record_index,turn,message_index,prompt_tokens_llama3,response_tokens_llama3\n"
    write(tmp_path, "sharegpt/sharegpt_turns.csv.gz", head + "a_0,0,0,0,3,4\nb_0,5,0,0,3,4\n")
    conv = [{"from": "human", "value": "hello"}, {"from": "gpt", "value": "hi"}]
    write(
        tmp_path,
        "sharegpt/sharegpt_v3_partial_conversations.jsonl.xz",
        json.dumps({"id": "a_0", "conversations": conv}) + "\n",
    )
    expect(r"sharegpt_turns\.csv\.gz line 3: record_index 5 points past", "sharegpt", tmp_path)


def _tar_xz(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:xz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_servegen_truncated_archive(tmp_path: Path) -> None:
    trace = "".join(f"{600 * i},1.0,1.0,Gamma,1.0,1.0\n" for i in range(3000)).encode()
    data = _tar_xz({"language/m-small/chunk-1-trace.csv": trace})
    path = tmp_path / "servegen/servegen_language-m-small.tar.xz"
    path.parent.mkdir(parents=True)
    path.write_bytes(data[: len(data) // 2])
    expect(r"servegen_language-m-small\.tar\.xz", "servegen", tmp_path, category="language-m-small")


def test_servegen_bad_trace_row_names_member_and_line(tmp_path: Path) -> None:
    members = {
        "language/m-small/chunk-1-trace.csv": b"0,1.0,1.0,Gamma,1,1\n600,oops,1.0,Gamma,1,1\n",
        "language/m-small/chunk-1-dataset.json": b'{"0": {"input_tokens": "{5: 1.0}", '
        b'"output_tokens": "{7: 1.0}"}}',
    }
    path = tmp_path / "servegen/servegen_language-m-small.tar.xz"
    path.parent.mkdir(parents=True)
    path.write_bytes(_tar_xz(members))
    expect(
        r"chunk-1-trace\.csv line 2: start, rate and cv must be numbers",
        "servegen",
        tmp_path,
        category="language-m-small",
    )


def test_missing_data_dir_is_a_data_error(tmp_path: Path) -> None:
    expect("does not exist", "azure_conv", tmp_path / "nowhere")


def test_missing_file_is_named(tmp_path: Path) -> None:
    msg = expect("file does not exist", "azure_code", tmp_path)
    assert "AzureLLMInferenceTrace_code.csv" in msg


def test_unknown_name_and_bad_option() -> None:
    with pytest.raises(UnknownNameError, match="did you mean 'azure_conv'"):
        load_pool("azure_cnv")
    with pytest.raises(ConfigError, match=r"modle: unknown key.*did you mean 'model'"):
        load_pool("sample_castillo", modle="x")


def test_castillo_sample_count_must_match_n_outputs(tmp_path: Path) -> None:
    castillo_files(tmp_path, [f"test,Mbpp,{MODEL},s1,p1,40,10,5 6\n"], [GOOD_PROMPT])
    expect(r"line 2: column output_sizes: 2 samples but n_outputs is 10", "castillo", tmp_path)
