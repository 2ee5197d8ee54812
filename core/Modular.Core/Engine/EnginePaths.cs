using System.Net;
using Modular.Core.Ice;
using Modular.Core.Peers;

namespace Modular.Core.Engine;

/// <summary>The engine's <see cref="IPeerPaths"/>: an <see cref="IceAgent"/> plus the candidates gathered for it.</summary>
internal sealed class EnginePaths(IceAgent agent, int wireGuardPortOffset) : IPeerPaths
{
    private volatile IReadOnlyList<IceCandidate> _candidates = [];

    public IReadOnlyList<IceCandidate> LocalCandidates
    {
        get => _candidates;
        set => _candidates = value;
    }

    public IceAgent Agent => agent;

    public IDisposable Register(IceCredentials local, Action<IPEndPoint, string> onValidCheck) => agent.Register(local, onValidCheck);

    public Task<CheckResult?> CheckAsync(IPEndPoint remote, IceCredentials local, IceCredentials remoteCredentials, TimeSpan timeout, TimeSpan interval, CancellationToken cancellationToken)
        => agent.CheckAsync(remote, local, remoteCredentials, timeout, interval, cancellationToken);

    // Kernel mode checks run on WireGuard's port + 1 (see IceSocketTransport): WireGuard itself is one port below.
    public IPEndPoint WireGuardEndpointFor(IPEndPoint checkedRemote)
        => wireGuardPortOffset == 0 ? checkedRemote : new IPEndPoint(checkedRemote.Address, checkedRemote.Port - wireGuardPortOffset);
}
