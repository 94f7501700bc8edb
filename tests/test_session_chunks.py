from tyllm.runtime.session import plan_chunks


def test_prompt_longer_than_the_largest_graph_runs_in_chunks_with_a_padded_tail():
    assert plan_chunks(20, [1, 8]) == [(0, 8, 8), (8, 8, 8), (16, 4, 8)]


def test_short_rest_uses_the_smallest_graph_that_holds_it():
    assert plan_chunks(10, [1, 4, 16]) == [(0, 10, 16)]
    assert plan_chunks(17, [1, 4, 16]) == [(0, 16, 16), (16, 1, 1)]


def test_only_decode_graph_compiled():
    assert plan_chunks(3, [1]) == [(0, 1, 1), (1, 1, 1), (2, 1, 1)]


def test_input_ids_may_be_a_list_a_tensor_or_a_batch_of_one():
    import torch

    from tyllm.runtime.session import flat_ids

    assert flat_ids([1, 2]) == flat_ids(torch.tensor([1, 2])) == flat_ids(torch.tensor([[1, 2]]))
