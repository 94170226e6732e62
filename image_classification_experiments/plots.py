"""The finishing of every accuracy plot the image-classification scripts write."""
from remind.checkpoint import atomic_write


def save_accuracy_plot(fig, ax, path, dpi):
    """Grid, legend, tight layout, then an atomic PNG write; the figure is closed."""
    import matplotlib.pyplot as plt

    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_write(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    plt.close(fig)
