import Testing

@testable import CTRPipeline

@Suite struct AllocatorSettingsTests {
    @Test func defaultsApplyWithoutAnOperatorChoice() {
        #expect(
            AllocatorSettings.settings(environment: ["PATH": "/usr/bin"])
                == [.arenaMax(AllocatorSettings.arenaMax), .mmapThreshold(AllocatorSettings.mmapThreshold)]
        )
    }

    @Test func theOperatorsEnvironmentWins() {
        #expect(AllocatorSettings.settings(environment: ["MALLOC_ARENA_MAX": "4"]) == [.mmapThreshold(AllocatorSettings.mmapThreshold)])
        #expect(AllocatorSettings.settings(environment: ["MALLOC_MMAP_THRESHOLD_": "65536"]) == [.arenaMax(AllocatorSettings.arenaMax)])
        #expect(
            AllocatorSettings.settings(environment: ["GLIBC_TUNABLES": "glibc.malloc.arena_max=2:glibc.malloc.mmap_threshold=1048576"]).isEmpty
        )
        #expect(
            AllocatorSettings.settings(environment: ["GLIBC_TUNABLES": "glibc.malloc.tcache_count=0"])
                == [.arenaMax(AllocatorSettings.arenaMax), .mmapThreshold(AllocatorSettings.mmapThreshold)]
        )
    }
}
