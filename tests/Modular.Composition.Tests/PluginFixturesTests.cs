using Modular.Testing;

namespace Modular.Composition.Tests;

public sealed class PluginFixturesTests
{
    [Fact]
    public async Task A_fixture_is_built_once_per_process_even_when_asked_concurrently()
    {
        var paths = await Task.WhenAll(Enumerable.Range(0, 4).Select(_ => Task.Run(() => PluginFixtures.Build("ThirdPartyProxy"))));
        Assert.Single(paths.Distinct());
        Assert.True(File.Exists(Path.Combine(paths[0], "ThirdPartyProxy.dll")));
        // Like a real plugin, a fixture never ships the contracts.
        Assert.False(File.Exists(Path.Combine(paths[0], "Modular.Abstractions.dll")));
    }

    [Fact]
    public void CreatePluginsDir_lays_out_one_folder_per_fixture()
    {
        var dir = PluginFixtures.CreatePluginsDir("ThirdPartyProxy", "ThrowingProxy");
        try
        {
            Assert.Equal(["ThirdPartyProxy", "ThrowingProxy"], Directory.GetDirectories(dir).Select(Path.GetFileName).Order());
            Assert.True(File.Exists(Path.Combine(dir, "ThrowingProxy", "ThrowingProxy.dll")));
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void An_unknown_fixture_is_a_clear_error()
        => Assert.Throws<FileNotFoundException>(() => PluginFixtures.Build("NoSuchFixture"));
}
