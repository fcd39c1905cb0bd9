"""The float64 NumPy reference: the LSTM math stated once, readable, and the oracle every
native path is tested against.

    i  = ra(Wi x + Ri h + bi [+ Pi*c])
    f  = ra(Wf x + Rf h + bf + forget_bias [+ Pf*c])      (f = 1 - i with input_forget)
    g  = act(Wg x + Rg h + bg)
    c' = f*c + i*g                                        (clamped to +-cell_clip)
    o  = ra(Wo x + Ro h + bo [+ Po*c'])
    h' = o * act_out(c')                                  (act_out = act unless given)
    h' = Wp h'                                            (with a projection; +-proj_clip)

Every gate pre-activation is clamped to +-gate_clip when set (ONNX ``clip``), after peepholes.

``dtype=np.float32`` runs the same code in float32 (the benchmark's NumPy peer).
"""
import numpy as np

from . import activations


def _states(layers, batch, initial_state, dtype):
    hs, cs = [], []
    k = 0
    for layer in layers:
        for _ in layer.directions:
            if initial_state is None:
                hs.append(np.zeros((batch, layer.output_size), dtype))
                cs.append(np.zeros((batch, layer.hidden_size), dtype))
            else:
                hs.append(np.asarray(initial_state[0][k], dtype))
                cs.append(np.asarray(initial_state[1][k], dtype))
            k += 1
    return hs, cs


def cell_step(x_proj, h, c, p, opts):
    """One step for a batch. x_proj = x @ W_ih.T + b_ih, hoisted out of the time loop."""
    H = c.shape[-1]
    z = x_proj + h @ p["weight_hh"].T + p["bias_hh"]
    zi, zf, zg, zo = z[:, :H], z[:, H:2 * H] + opts.forget_bias, z[:, 2 * H:3 * H], z[:, 3 * H:]
    if opts.peepholes:
        zi = zi + p["peephole"][0] * c
        zf = zf + p["peephole"][1] * c
    if opts.gate_clip is not None:
        zi, zf, zg = (np.clip(v, -opts.gate_clip, opts.gate_clip) for v in (zi, zf, zg))
    i = activations.apply(opts.recurrent_activation, zi)
    f = 1 - i if opts.input_forget else activations.apply(opts.recurrent_activation, zf)
    g = activations.apply(opts.activation, zg)
    c_new = f * c + i * g
    if opts.cell_clip is not None:
        c_new = np.clip(c_new, -opts.cell_clip, opts.cell_clip)
    if opts.peepholes:
        zo = zo + p["peephole"][2] * c_new
    if opts.gate_clip is not None:
        zo = np.clip(zo, -opts.gate_clip, opts.gate_clip)
    o = activations.apply(opts.recurrent_activation, zo)
    h_new = o * activations.apply(opts.output_activation, c_new)
    if opts.proj_size:
        h_new = h_new @ p["weight_hr"].T
        if opts.proj_clip is not None:
            h_new = np.clip(h_new, -opts.proj_clip, opts.proj_clip)
    return h_new, c_new


def run_direction(x, lengths, h, c, p, opts, reverse):
    """x: (B, T, I) batch-major. Returns y (B, T, O) with zeros past each length, final h, c."""
    B, T, _ = x.shape
    x_proj = x @ p["weight_ih"].T + p["bias_ih"]
    y = np.zeros((B, T, h.shape[1]), x.dtype)
    rows = np.arange(B)
    for s in range(T):
        live = s < lengths
        if not live.any():
            break
        t = np.where(live, lengths - 1 - s, 0) if reverse else np.full(B, s)
        h_new, c_new = cell_step(x_proj[rows, t], h, c, p, opts)
        h = np.where(live[:, None], h_new, h)
        c = np.where(live[:, None], c_new, c)
        y[rows[live], t[live]] = h_new[live]
    return y, h, c


def lstm(layers, x, *, batch_first=True, initial_state=None, lengths=None,
         return_sequences=True, dtype=np.float64):
    """Run a stack of ``_spec.Layer`` over x; same conventions as ``fastlstm.LSTM.__call__``."""
    x = np.asarray(x, dtype)
    if not batch_first:
        x = x.transpose(1, 0, 2)
    B, T, _ = x.shape
    lengths = np.full(B, T) if lengths is None else np.asarray(lengths)
    hs, cs = _states(layers, B, initial_state, dtype)
    p_cast = lambda p: {k: np.asarray(v, dtype) for k, v in p.items()}
    h_n, c_n = [], []
    k = 0
    for layer in layers:
        outs = []
        for d, params in enumerate(layer.directions):
            y, h, c = run_direction(x, lengths, hs[k], cs[k], p_cast(params), layer.options,
                                    reverse=d == 1 or layer.reverse)
            outs.append(y)
            h_n.append(h)
            c_n.append(c)
            k += 1
        x = np.concatenate(outs, axis=2)
    if return_sequences:
        y = x if batch_first else x.transpose(1, 0, 2)
    else:
        D = len(layers[-1].directions)
        y = np.where((lengths > 0)[:, None], np.concatenate(h_n[-D:], axis=1), 0)  # (NaN*0 is NaN)
    return y, (h_n, c_n)


def run(model, x, initial_state=None, lengths=None, return_sequences=True, dtype=np.float64):
    """The reference result for a fastlstm model (``LSTM`` or ``LSTMCell``) on the same inputs.

    For an LSTM the states come back stacked as ``(layers*D, batch, out)`` when the layers
    agree in size, like the model's own; for an LSTMCell, x is ``(batch, input)`` and
    ``initial_state`` is ``(h, c)`` of 2-D arrays, and the result is ``y, (h, c)``.
    """
    from .models import LSTMCell  # the reference does not depend on the models otherwise

    if isinstance(model, LSTMCell):
        state = None if initial_state is None else ([initial_state[0]], [initial_state[1]])
        y, (h, c) = lstm(model.layers, np.asarray(x, dtype)[:, None, :], initial_state=state,
                         dtype=dtype)
        return y[:, 0], (h[0], c[0])
    if initial_state is None:
        initial_state = model.initial_state   # a state the model holds (ONNX graphs), or None
    y, (h, c) = lstm(model.layers, x, batch_first=model.batch_first, initial_state=initial_state,
                     lengths=lengths, return_sequences=return_sequences, dtype=dtype)
    try:
        return y, (np.stack(h), np.stack(c))
    except ValueError:
        return y, (h, c)
