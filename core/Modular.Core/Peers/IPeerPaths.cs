using System.Net;
using Modular.Core.Ice;

namespace Modular.Core.Peers;

/// <summary>The ICE layer as a peer connection uses it (an <see cref="IceAgent"/>, or a test double).</summary>
public interface IPeerPaths
{
    /// <summary>This machine's current candidates (host and server-reflexive), as sent in offers.</summary>
    IReadOnlyList<IceCandidate> LocalCandidates { get; }

    /// <summary>Answers checks for <paramref name="local"/>; see <see cref="IceAgent.Register"/>.</summary>
    IDisposable Register(IceCredentials local, Action<IPEndPoint, string> onValidCheck);

    Task<CheckResult?> CheckAsync(IPEndPoint remote, IceCredentials local, IceCredentials remoteCredentials, TimeSpan timeout, TimeSpan interval, CancellationToken cancellationToken);

    /// <summary>The WireGuard endpoint for a remote candidate that passed checks (identity when checks run on WireGuard's port).</summary>
    IPEndPoint WireGuardEndpointFor(IPEndPoint checkedRemote);
}
