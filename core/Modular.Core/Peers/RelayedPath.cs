using Modular.Abstractions.Proxy;

namespace Modular.Core.Peers;

/// <summary>A relayed path to one peer joined to WireGuard through a proxy.</summary>
/// <param name="IsPaired">True once the peer has bound at the relay too (before that the relay drops what we send); null: unknown.</param>
public sealed record RelayedPath(IProxy Proxy, string RelayAddress, Func<bool>? IsPaired = null);
