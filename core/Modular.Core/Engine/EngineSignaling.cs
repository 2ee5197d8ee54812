using Modular.Abstractions.WireGuard;
using Modular.Control.Signal;
using Modular.Core.Peers;

namespace Modular.Core.Engine;

/// <summary>Signal as peer connections use it: the engine swaps the client on every reconnect.</summary>
internal sealed class EngineSignaling : IPeerSignaling
{
    private volatile SignalClient? _client;

    public SignalClient? Client
    {
        get => _client;
        set => _client = value;
    }

    public Task SendAsync(WgKey recipient, SignalBody body, CancellationToken cancellationToken)
        => (_client ?? throw new InvalidOperationException("not connected to signal")).SendAsync(recipient, body, cancellationToken);
}
