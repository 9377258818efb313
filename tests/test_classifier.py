import pytest
import torch

from stabook import classifier, data


@pytest.fixture(scope="module")
def fitted():
    images, labels = data.load_digits()
    splits = data.split_indices(len(images), seed=0)
    clf = classifier.train_digit_classifier(images[splits["train"]], labels[splits["train"]], steps=150)
    return clf, images[splits["val"]], labels[splits["val"]]


def test_the_classifier_reads_transformed_held_out_digits_and_is_deterministic(fitted):
    clf, images, labels = fitted
    batch = data.SequenceGenerator(images, T=8).sample(48, generator=torch.Generator().manual_seed(1))
    y = labels[batch.index]
    assert classifier.accuracy(clf, batch.frames[:, 1:].flatten(0, 1), y.repeat_interleave(8)) > 0.6
    full_images, full_labels = data.load_digits()
    splits = data.split_indices(len(full_images), seed=0)
    again = classifier.train_digit_classifier(full_images[splits["train"]], full_labels[splits["train"]],
                                              steps=150)
    for a, b in zip(clf.state_dict().values(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_recognition_is_one_for_the_truth_and_low_for_a_blurred_average(fitted):
    clf, images, labels = fitted
    batch = data.SequenceGenerator(images, T=4).sample(32, generator=torch.Generator().manual_seed(2))
    y = labels[batch.index]
    truth = classifier.recognition(clf, batch.frames, batch.frames, y)
    assert truth["ratio"] == pytest.approx(1.0) and truth["predicted"] == truth["true"]
    blob = batch.frames.mean(0, keepdim=True).expand_as(batch.frames)
    assert classifier.recognition(clf, blob, batch.frames, y)["ratio"] < 0.5
    with pytest.raises(ValueError, match="same shape"):
        classifier.recognition(clf, batch.frames[:, :2], batch.frames, y)
    with pytest.raises(ValueError, match="labels must have one entry per image"):
        classifier.train_digit_classifier(images, labels[:-1], steps=1)
    with pytest.raises(ValueError, match=r"pixel values in \[0, 1\]"):
        clf(batch.frames[:, 0] * 255)
