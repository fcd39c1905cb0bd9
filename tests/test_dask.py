"""Batch scoring on a real Dask cluster of worker processes: the model travels to the workers
pickled by value, and their scores equal the local ones."""
import os

import numpy as np
import pytest

import distributed

import fastlstm


def test_batch_scoring_on_a_local_cluster():
    model = fastlstm.LSTM(12, 48, num_layers=2, seed=11)
    rng = np.random.default_rng(0)
    sequences = [rng.standard_normal((n, 12)).astype(np.float32)
                 for n in rng.integers(1, 41, 200)]
    chunks = [sequences[k:k + 25] for k in range(0, len(sequences), 25)]

    # Local functions travel to the workers by value; the test module is not importable there.
    def score(model, chunk):
        """Final outputs of a list of (time, features) sequences, padded into one batch."""
        lengths = np.array([len(s) for s in chunk])
        x = np.zeros((len(chunk), lengths.max(), chunk[0].shape[1]), np.float32)
        for b, s in enumerate(chunk):
            x[b, :len(s)] = s
        y, _ = model(x, lengths=lengths, return_sequences=False)
        return y, fastlstm.get_num_threads(), os.getpid()

    with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        client.run(fastlstm.set_num_threads, 1)   # one kernel thread per worker process
        shipped = client.scatter(model, broadcast=True)
        parts = client.scatter(chunks)
        results = client.gather(client.map(score, [shipped] * len(parts), parts))
        worker_pids = set(client.run(os.getpid).values())
    assert len(worker_pids) == 2 and os.getpid() not in worker_pids
    assert {pid for _, _, pid in results} <= worker_pids
    assert all(threads == 1 for _, threads, _ in results)
    remote = np.concatenate([y for y, _, _ in results])
    local = np.concatenate([score(model, chunk)[0] for chunk in chunks])
    np.testing.assert_array_equal(remote, local)
