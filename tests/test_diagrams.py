import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from stabook import diagrams  # noqa: E402


def test_the_graphical_model_draws_every_node():
    fig, ax = plt.subplots()
    diagrams.graphical_model(ax, T=2)
    labels = {t.get_text() for t in ax.texts}
    assert {"$z_0$", "$z_2$", "$x_0$", "$x_2$", "$y_1$", "$s_2$", "$g_2$"} <= labels
    assert "$y_0$" not in labels                    # spikes start at the first transition
    with pytest.raises(ValueError, match="T must be an int >= 1"):
        diagrams.graphical_model(ax, T=0)
    plt.close(fig)


def test_the_inference_model_reads_frames_only():
    # the encoder reads x_0 and each pair network a frame pair: no later latent is drawn, so none can look
    # like an input of the pair network
    fig, ax = plt.subplots()
    diagrams.inference_model(ax, T=3)
    labels = [t.get_text() for t in ax.texts]
    assert labels.count("pair") == 3 and "$z_0$" in labels and "$z_1$" not in labels
    assert {"$y_3$", "$s_3$", "$x_3$"} <= set(labels)
    with pytest.raises(ValueError, match="T must be an int >= 1"):
        diagrams.inference_model(ax, T=True)
    plt.close(fig)


def test_the_pipeline_names_each_stage():
    fig, ax = plt.subplots()
    diagrams.pipeline(ax)
    text = " ".join(t.get_text() for t in ax.texts)
    for stage in ("encoder", "pair network", "spikes and slabs", "flow", "decoder", "terms of the bound"):
        assert stage in text
    plt.close(fig)
